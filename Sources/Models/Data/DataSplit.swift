/// Which part of a dataset a record belongs to.
public enum DataSplit: String, Sendable, CaseIterable {
    case train, validation = "val", test
}
