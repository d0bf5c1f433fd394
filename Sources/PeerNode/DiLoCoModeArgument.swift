import ArgumentParser
import DiLoCo

// `--mode sync|async` and `--async-start rebase|restart` on the commands that train with DiLoCo.
extension DiLoCoOptions.Mode: ExpressibleByArgument {}
extension DiLoCoOptions.AsyncStart: ExpressibleByArgument {}
