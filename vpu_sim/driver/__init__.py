"""The simulated drivers, one folder per VPU: ``amphion`` (NXP i.MX8) and ``mpp`` (Rockchip's
mpp_service for the RK3588), both ``memtrackfs.driverkit.DeviceDriver``s: what they share
(serving until SIGTERM or the mount's end, the caller's memory as ``UserMemory``) is written
there. Beside them, the v4l2-memtrack side of a V4L2 driver, through the socket: ``memtrack``
(the RFC's calls), ``accounting`` (what a driver holds, charged as it allocates) and ``remote``
(those calls made on a memtrackfs mount); the Amphion driver is the one V4L2 driver today, the
MPP driver reports through mpp_service instead."""
