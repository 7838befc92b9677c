"""The simulated drivers: the Amphion VPU (its model, instances, vb2 queues, controls, ioctls and
daemon) and, in ``mpp``, Rockchip's mpp_service for the RK3588."""
