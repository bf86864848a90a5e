"""The instruments: Lightning callbacks that measure batch statistics' effects during training."""
