// Shared harness for the multi-peer tests: clusters of in-process peers on 127.0.0.1.
