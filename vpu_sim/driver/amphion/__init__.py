"""The simulated NXP Amphion VPU driver (i.MX8QXP/QM): its model (``model``: names, cores, sizes), the
device and its instances (decoder, encoder), the V4L2 core pieces it sits on (vb2 ``queue``,
``controls``, ``events``), the ioctls of its video nodes and media device, and the daemon."""
