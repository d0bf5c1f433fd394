import Testing
@testable import Collectives

@Test func sha256KnownVectors() {
    #expect(Digest.of("").description == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(Digest.of("abc").description == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    #expect(Digest.of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").description
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    #expect(Digest.of("abc").short == "ba7816bf8f01")
    let bytes: [UInt8] = Array("abc".utf8)
    #expect(Digest.of(bytes) == Digest.of("abc"))
    #expect(Digest.of(bytes).hashValue == Digest.of("abc").hashValue)
}

@Test func builderStreamsLikeOneShot() {
    var b = DigestBuilder()
    b.update(Array("ab".utf8))
    Array("c".utf8).withUnsafeBytes { b.update($0) }
    let rb = b.finish()
    #expect(rb == Digest.of("abc"))

    // Integers: little-endian fixed width; strings: length-prefixed.
    var c = DigestBuilder()
    c.update(UInt32(0x0102_0304))
    c.update("hi")
    let want: [UInt8] = [4, 3, 2, 1, 2, 0, 0, 0, 0, 0, 0, 0] + Array("hi".utf8)
    let rc = c.finish()
    #expect(rc == Digest.of(want))

    var d1 = DigestBuilder(); d1.update("ab"); d1.update("c")
    var d2 = DigestBuilder(); d2.update("a"); d2.update("bc")
    let r1 = d1.finish(), r2 = d2.finish()
    #expect(r1 != r2)

    let floats: [Float] = [1, 2]
    #expect(Digest.of(floats) == Digest.of([0, 0, 0x80, 0x3F, 0, 0, 0, 0x40] as [UInt8]))
}
