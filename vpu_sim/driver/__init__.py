"""The simulated drivers, one folder per VPU: ``amphion`` (NXP i.MX8) and ``mpp`` (Rockchip's
mpp_service for the RK3588); what they share talks to the socket (``remote``, ``memtrack``,
``accounting``)."""
