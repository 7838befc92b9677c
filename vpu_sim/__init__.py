"""vpu_sim: a simulated NXP Amphion VPU driver (with the v4l2-memtrack RFC applied), and a simulated
Rockchip RK3588 mpp_service driver with MPP-like applications (``driver/mpp``, ``apps/mpp``,
``mpp_uapi``, ``boards``; the home screen: ``apps/compositor``).

uapi (V4L2 structs and ioctl numbers), amphion (the model's sizes and names), memtrack and
accounting (the tracker and memory it allocates from), formats, controls, queue, instance,
decoder, encoder and device (the driver's state), faults (what the driver gets wrong on
purpose), ioctls (an open file answering V4L2 ioctls), remote and daemon (the driver on a
memtrackfs socket); v4l2, apps and hold (applications); params, scenario, hog, view and runner
(``vpu-sim scenario``); cli (the command).
"""
