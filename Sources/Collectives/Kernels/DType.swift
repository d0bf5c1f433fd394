/// Element types a collective can carry. Raw values are part of the wire protocol.
public enum DType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 1, f64 = 2, f16 = 3, bf16 = 4, i32 = 5, i64 = 6, u8 = 7

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f32, .i32: 4
        case .f64, .i64: 8
        case .f16, .bf16: 2
        case .u8: 1
        }
    }

    /// Quantization applies only to floating-point data.
    public var isFloat: Bool {
        switch self {
        case .f32, .f64, .f16, .bf16: true
        case .i32, .i64, .u8: false
        }
    }

    public var description: String {
        switch self {
        case .f32: "f32"
        case .f64: "f64"
        case .f16: "f16"
        case .bf16: "bf16"
        case .i32: "i32"
        case .i64: "i64"
        case .u8: "u8"
        }
    }
}

/// Reduction operators. Raw values are part of the wire protocol.
public enum ReduceOp: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case sum = 1, avg = 2, min = 3, max = 4, prod = 5

    public var description: String {
        switch self {
        case .sum: "sum"
        case .avg: "avg"
        case .min: "min"
        case .max: "max"
        case .prod: "prod"
        }
    }
}

/// How float data is encoded on the wire. Raw values are part of the wire protocol.
public enum Quantization: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case none = 0
    /// Per block: f32 minimum and f32 step, then one code per element: x ≈ min + code·step.
    case int8MinMax = 1
    /// Per block: f32 scale and f32 zero point (an integer value), then one code per element:
    /// x ≈ (code − zeroPoint)·scale. Zero is represented exactly.
    case int8ZeroPoint = 2

    public var description: String {
        switch self {
        case .none: "none"
        case .int8MinMax: "int8-minmax"
        case .int8ZeroPoint: "int8-zeropoint"
        }
    }
}
