import Foundation

/// Text a peer sent (a reject reason, a removal reason, a host name), made safe for one log
/// line: control characters (newlines, escape, the C1 range, DEL) and the Unicode marks that
/// reorder or hide text become visible escapes (`\n`, `\u{1B}`), a backslash is doubled, and
/// the result is cut at `limit` characters (marked with `…`). A stranger can then neither end
/// a log line early nor write a fake one, nor colour a terminal.
public func escapedForLog(_ text: some StringProtocol, limit: Int = 256) -> String {
    var out = ""
    var count = 0
    for scalar in text.unicodeScalars {
        if count >= limit {
            out += "…"
            break
        }
        count += 1
        switch scalar {
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\\": out += "\\\\"
        default:
            let v = scalar.value
            let hidden = v < 0x20 || (0x7F...0x9F).contains(v)
                || (0x200B...0x200F).contains(v) || (0x202A...0x202E).contains(v) || (0x2066...0x2069).contains(v)
                || v == 0x2028 || v == 0x2029 || v == 0xFEFF
            if hidden {
                out += "\\u{" + String(v, radix: 16, uppercase: true) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out
}

/// At most `burst` log lines per `interval` for one kind of event caused by strangers (failed
/// handshakes, refused messages); the rest are counted, and the next line allowed says how many
/// were left out. Thread-safe; bounded memory.
public final class LogRateLimiter: @unchecked Sendable {
    private let lock = NSLock()
    private let interval: Duration
    private let burst: Int
    private var windowStart: ContinuousClock.Instant?
    private var inWindow = 0
    private var suppressed = 0

    public init(burst: Int = 10, interval: Duration = .seconds(10)) {
        self.burst = burst
        self.interval = interval
    }

    /// nil: leave this line out. Otherwise log it, adding the returned count of lines left out
    /// since the last one logged (0: none).
    public func admit(now: ContinuousClock.Instant = .now) -> Int? {
        lock.withLock {
            if windowStart.map({ $0.duration(to: now) >= interval }) ?? true {
                windowStart = now
                inWindow = 0
            }
            guard inWindow < burst else {
                suppressed += 1
                return nil
            }
            inWindow += 1
            defer { suppressed = 0 }
            return suppressed
        }
    }

    /// `line` with a note of the lines left out before it, when there were some.
    public static func annotate(_ line: String, suppressed: Int) -> String {
        suppressed == 0 ? line : "\(line) (\(suppressed) similar line(s) left out)"
    }
}
