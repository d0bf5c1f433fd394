import ArgumentParser
import Foundation

/// `peernode status HOST:PORT`: what one running node says about itself, read from its status port
/// (`GET /status`), as a table for a person or as the raw JSON for scripts (`--json`).
///
/// Any failure (nothing listening, no answer in time, an answer that is not a status document) is
/// one line on stderr and exit code 1, so `peernode status ... || alert` works in a script.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a running node's status, read from its status port.")

    @Argument(help: "The node's status address, HOST:PORT (see `status_port=` in its ready line).")
    var address: String
    @Flag(help: "Print the /status JSON document as received.") var json = false
    @Option(help: "Seconds to wait for the answer.") var timeout: Double = 5

    func validate() throws {
        guard HostPort(address) != nil else { throw ValidationError("expected HOST:PORT, got '\(address)'") }
        guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout must be in (0, 3600] seconds") }
    }

    func run() throws {
        let target = HostPort(address)!
        let client = StatusClient(host: target.host, port: target.port, timeout: .milliseconds(Int64(timeout * 1000)))
        let response: StatusClient.Response
        let report: StatusReport
        do {
            response = try client.get("/status")
            guard response.status == 200 else {
                let reason = String(decoding: response.body.prefix(200), as: UTF8.self)
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                throw StatusClientError("\(address) answered HTTP \(response.status): \(reason)")
            }
            do {
                report = try StatusReport.decoder().decode(StatusReport.self, from: response.body)
            } catch {
                throw StatusClientError("\(address) did not answer with a peernode status document (\(Self.reason(error)))")
            }
        } catch {
            throw RunError("\(error)")
        }
        if json {
            FileHandle.standardOutput.write(response.body)
            if response.body.last != UInt8(ascii: "\n") { print() }
        } else {
            print(Self.table(report), terminator: "")
        }
    }

    static func reason(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "no field '\(key.stringValue)'"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "bad field '\(context.codingPath.map(\.stringValue).joined(separator: "."))'"
        case DecodingError.dataCorrupted: return "not JSON"
        default: return "\(error)"
        }
    }

    /// The human view: a key/value block, then the members in view order.
    static func table(_ s: StatusReport) -> String {
        let last = s.history.last
        var rows: [(String, String)] = [
            ("node", "\(s.id)  \(s.role), \(s.healthy ? "healthy" : s.health)"),
            ("tls", s.tls == "off" ? "off (plaintext links)" : "on (\(s.tls))"),
            ("epoch", "\(s.epoch)  line \(s.line)  coordinator \(s.coordinator ?? "-")"),
            ("revision", "\(s.revision)  digest \(s.digest.map { String($0.prefix(12)) } ?? "-")"),
            ("model", "\(s.model) / \(s.dataset)"),
            ("peers", "\(s.peers)"),
        ]
        if let last {
            rows.append(("loss", format(last.loss)))
            rows.append((s.metricName ?? "metric", format(last.metric)))
            rows.append(("last step", "\(format(last.innerSeconds)) s inner, \(format(last.communicationSeconds)) s communication"))
        } else {
            rows.append(("loss", "- (no outer step yet)"))
        }
        let t = s.throughput
        rows += [
            ("sent", "\(bytes(Double(s.bytesSent)))  (last step \(bytes(t.lastStepSentBytesPerSecond))/s, "
                + "overall \(bytes(t.overallSentBytesPerSecond))/s)"),
            ("received", "\(bytes(Double(s.bytesReceived)))  (last step \(bytes(t.lastStepReceivedBytesPerSecond))/s, "
                + "overall \(bytes(t.overallReceivedBytesPerSecond))/s)"),
            ("events", "joins \(s.events.joins), leaves \(s.events.leaves), deaths \(s.events.deaths), "
                + "aborts \(s.events.aborts), retries \(s.events.retries)"),
            ("uptime", duration(s.uptimeSeconds)),
            ("version", s.version),
        ]
        let width = rows.map(\.0.count).max() ?? 0
        var out = rows.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 + "\n" }.joined()
        out += "\nmembers (\(s.members.count), epoch \(s.epoch)):\n"
        let header = ["#", "NODE", "CONTROL", "DATA", "RING", ""]
        let cells = s.members.enumerated().map { i, m in
            ["\(i)", m.id, m.control, m.inRing ? m.data : "-", m.inRing ? "yes" : "no",
             [m.isCoordinator ? "coordinator" : nil, m.isSelf ? "this node" : nil].compactMap { $0 }.joined(separator: ", ")]
        }
        let widths = header.indices.map { c in ([header] + cells).map { $0[c].count }.max() ?? 0 }
        for line in [header] + cells {
            out += "  " + line.enumerated().map { c, text in text.padding(toLength: widths[c], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces) + "\n"
        }
        return out
    }

    static func format(_ value: Double) -> String {
        guard value.isFinite else { return "\(value)" }
        let a = abs(value)
        return a != 0 && (a < 0.001 || a >= 1e5) ? String(format: "%.3e", value) : String(format: "%.4g", value)
    }

    static func bytes(_ value: Double) -> String {
        let units = ["B", "KB", "MB", "GB", "TB"]
        var v = value
        var i = 0
        while abs(v) >= 1000, i < units.count - 1 { v /= 1000; i += 1 }
        return i == 0 ? "\(Int(v)) B" : String(format: "%.3g", v) + " " + units[i]
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds)
        let (d, h, m) = (s / 86400, s % 86400 / 3600, s % 3600 / 60)
        return (d > 0 ? "\(d)d " : "") + (d > 0 || h > 0 ? "\(h)h " : "") + "\(m)m \(s % 60)s"
    }
}
