// swift-tools-version:6.0
// Kernel micro-benchmark, kept out of the main package so that it builds in release in seconds
// (no NIO). Sources/Kern links to the kernel files of Sources/Collectives/Kernels.
//   swift build -c release && .build/release/kernel-bench [all|quant|fused|sum|cached|parts] [--cpu]
import PackageDescription

let package = Package(
    name: "kernel-bench",
    targets: [
        // -enable-testing: `kernel-bench parts` times the internal halves of quantize.
        .systemLibrary(name: "CKernelSupport"),
        .target(name: "Kern", dependencies: ["CKernelSupport"], swiftSettings: [.unsafeFlags(["-enable-testing"])]),
        .executableTarget(name: "kernel-bench", dependencies: ["Kern"]),
    ]
)
