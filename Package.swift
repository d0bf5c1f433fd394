// swift-tools-version:6.0
import PackageDescription

// MARK: - Layers (imports point down only):
//   PeerNode -> DiLoCo -> Collectives -> Transport,  DiLoCo -> Models.

// The collectives' kernels a second time, compiled for AVX2 (`-target-cpu haswell`), on x86-64
// hosts. `Collectives.Kernels` calls them only when the CPU has the features (docs/kernels.md §6);
// the sources are the same files (symlinks), and no FMA is emitted, so both give the same bits.
#if arch(x86_64)
let avx2Kernels: [Target] = [
    .target(name: "KernelsAVX2", dependencies: ["CKernelSupport"],
            swiftSettings: [.unsafeFlags(["-Xfrontend", "-target-cpu", "-Xfrontend", "haswell"])]),
]
let avx2KernelsDependency: [Target.Dependency] = ["KernelsAVX2"]
#else
let avx2Kernels: [Target] = []
let avx2KernelsDependency: [Target.Dependency] = []
#endif

let package = Package(
    name: "peernode",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "peernode", targets: ["PeerNode"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        // The status port (Sources/PeerNode/Status): HTTP server, metrics API and Prometheus exposition.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // MARK: C libraries (Debian: libopenblas-dev, libzstd-dev, libssl-dev)
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // Non-temporal stores and the store fence for the kernels (header only; Swift has neither).
        .systemLibrary(name: "CKernelSupport"),

        // MARK: Library modules
        .target(
            name: "Transport",
            dependencies: [
                "COpenSSL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "Collectives",
            dependencies: [
                "Transport", "COpenSSL", "CZstd", "CKernelSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ] + avx2KernelsDependency
        ),
        .target(
            name: "Models",
            dependencies: ["COpenBLAS", "CZstd"],
            // The shipped datasets (zstd-compressed; provenance and licences in docs/datasets.md).
            resources: [.copy("Resources")]
        ),
        .target(name: "DiLoCo", dependencies: ["Collectives", "Models", "CZstd"]),

        // MARK: The executable
        .executableTarget(
            name: "PeerNode",
            dependencies: [
                "DiLoCo", "Collectives", "Transport", "Models",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                // The status port's HTTP parser and a channel without a socket, for its fuzz target
                // (Sources/PeerNode/Fuzz; compiled only in scripts/fuzz.sh's build).
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                // The status port's connection guard wraps its HTTP/1 channel (StatusGuard.swift).
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),

        // MARK: Tests
        .target(
            name: "PeerTestSupport",
            dependencies: ["Collectives", "Transport"],
            path: "Tests/PeerTestSupport"
        ),
        .testTarget(
            name: "TransportTests",
            dependencies: [
                "Transport", "PeerTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "CollectivesTests",
            dependencies: [
                "Collectives", "PeerTestSupport", "Transport",
                .product(name: "InMemoryLogging", package: "swift-log"),
            ] + avx2KernelsDependency
        ),
        .testTarget(name: "ModelsTests", dependencies: ["Models"]),
        .testTarget(
            name: "DiLoCoTests",
            dependencies: ["DiLoCo", "Collectives", "Models", "PeerTestSupport", "Transport",
                           .product(name: "Logging", package: "swift-log")]
        ),
        // Start the built `peernode` binary as real processes (the libraries to read what it
        // wrote, e.g. a checkpoint's θ; Transport to dial their data ports).
        .testTarget(name: "PeerNodeIntegrationTests", dependencies: ["DiLoCo", "Models", "Transport", "PeerTestSupport"]),
        // The executable's pure parts (its settings) in-process, through `@testable import`.
        .testTarget(name: "PeerNodeTests", dependencies: ["PeerNode"]),
        .testTarget(
            name: "MembershipTests",
            dependencies: [
                "Collectives", "Transport", "PeerTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "InMemoryLogging", package: "swift-log"),
            ]
        ),
    ] + avx2Kernels
)
