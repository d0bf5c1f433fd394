/// The process entry point: the command line. A fuzzing build (`-DPEERNODE_FUZZ`, made only by
/// scripts/fuzz.sh) replaces it with libFuzzer's driver (Fuzz/FuzzTargets.swift).
#if !PEERNODE_FUZZ
@main
enum PeerNodeMain {
    static func main() async {
        await PeerNodeCommand.main()
    }
}
#endif
