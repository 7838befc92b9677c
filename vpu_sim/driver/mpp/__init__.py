"""The simulated Rockchip mpp_service driver (RK3588): its files' ioctls (``file``), the codec
cores' timing (``hardware``) and the daemon serving dev/mpp_service (``daemon``). The sessions'
bookkeeping lives in memtrackfs's model (``memtrackfs.model.mpp``)."""
