"""The simulated Amphion VPU driver: its model, instances, vb2 queues, controls, ioctls and daemon."""
