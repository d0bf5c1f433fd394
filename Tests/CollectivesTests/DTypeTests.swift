import Testing
@testable import Collectives

@Test func elementSizes() {
    #expect(DType.allCases.map(\.size) == [4, 8, 2, 2, 4, 8, 1])
    #expect(DType.allCases.filter(\.isFloat) == [.f32, .f64, .f16, .bf16])
}
