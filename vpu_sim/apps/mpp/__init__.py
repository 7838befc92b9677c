"""The user side of Rockchip MPP, as the simulated applications use it: buffer sizes
(``sizes``), the mpp_service device (``service``) and the codec sessions (``codec``)."""
