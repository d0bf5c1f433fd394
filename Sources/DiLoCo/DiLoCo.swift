// DiLoCo: the inner-loop driver and outer optimizer over a communicator and a model protocol.
