import Foundation
import Hummingbird
import NIOCore

/// The routes of the status port. A hand-written switch rather than Hummingbird's `Router`: the
/// router answers a known path asked with another method with 404, and a read-only port should say
/// 405 (with `Allow: GET`) so a client learns it is the method, not the path, that is wrong.
struct StatusResponder: HTTPResponder {
    typealias Context = BasicRequestContext

    let recorder: StatusRecorder
    let metrics: StatusMetrics

    static let paths: Set<String> = ["/", "/status", "/metrics", "/healthz"]

    func respond(to request: Request, context: Context) async throws -> Response {
        let path = request.uri.path
        guard Self.paths.contains(path) else {
            return Self.text(.notFound, "not found: \(path) (try /, /status, /metrics or /healthz)\n")
        }
        guard request.method == .get else {
            var response = Self.text(.methodNotAllowed, "the status port is read-only: use GET\n")
            response.headers[.allow] = "GET"
            return response
        }
        switch path {
        case "/status":
            let since = request.uri.queryParameters["since"].flatMap { UInt64($0) }
            let body = try StatusReport.encoder().encode(recorder.report(since: since))
            return Self.response(.ok, contentType: "application/json", ByteBuffer(bytes: body))
        case "/metrics":
            let text = metrics.exposition(for: recorder.report())
            return Self.response(.ok, contentType: "text/plain; version=0.0.4; charset=utf-8", ByteBuffer(string: text))
        case "/healthz":
            let report = recorder.report(since: UInt64.max)
            return Self.text(report.healthy ? .ok : .serviceUnavailable, report.healthy ? "ok\n" : report.health + "\n")
        default:
            return Self.response(.ok, contentType: "text/html; charset=utf-8", ByteBuffer(string: StatusPage.html))
        }
    }

    static func text(_ status: HTTPResponse.Status, _ text: String) -> Response {
        response(status, contentType: "text/plain; charset=utf-8", ByteBuffer(string: text))
    }

    static func response(_ status: HTTPResponse.Status, contentType: String, _ body: ByteBuffer) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = contentType
        // Live numbers: a cached answer is a wrong answer.
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: body))
    }
}
