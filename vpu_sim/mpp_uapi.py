"""Rockchip's mpp_service ioctl ABI, shared by the simulated driver and the MPP-like applications.

From include/uapi/linux/rk-mpp.h and drivers/video/rockchip/mpp/mpp_common.c (BSP), and the
user library's osal/inc/mpp_service.h (rockchip-linux/mpp): one ioctl, ``MPP_IOC_CFG_V1``, whose
argument points to an array of ``struct mpp_msg_v1``; the kernel reads them one after another
up to the one flagged last. Register writes carry dma-buf file descriptors in the address
registers the device's translation table names; with ``MPP_FLAGS_REG_NO_OFFSET`` (MPP's
``MPP_FLAGS_REG_OFFSET_ALONE``, which MPP always sets) a register holds the whole fd and offsets
come in a separate ``SET_REG_ADDR_OFFSET`` message.

The simulation's one departure: the "fd" an application writes is the dma-buf's inode number
(what the memtrackfs socket hands it), since no real dma-buf file exists to pass.
"""
from __future__ import annotations

import ctypes

MPP_IOC_CFG_V1 = 0x40047601   # _IOW('v', 1, unsigned int)
MPP_IOC_CFG_V2 = 0x40047602   # defined, refused with EINVAL
MPP_MAX_MSG_NUM = 16
MPP_MAX_REG_TRANS_NUM = 80    # register offsets / rcb infos per message

# enum MPP_DEV_COMMAND_TYPE
QUERY_HW_SUPPORT, QUERY_HW_ID, QUERY_CMD_SUPPORT = 0x000, 0x001, 0x002
INIT_CLIENT_TYPE, INIT_DRIVER_DATA, INIT_TRANS_TABLE = 0x100, 0x101, 0x102
SET_REG_WRITE, SET_REG_READ, SET_REG_ADDR_OFFSET, SET_RCB_INFO, SET_SESSION_FD = 0x200, 0x201, 0x202, 0x203, 0x204
POLL_HW_FINISH, POLL_HW_IRQ = 0x300, 0x301
RESET_SESSION, TRANS_FD_TO_IOVA, RELEASE_FD, SEND_CODEC_INFO = 0x400, 0x401, 0x402, 0x403
# mpp_get_cmd_butt(): each group's end, what QUERY_CMD_SUPPORT answers
COMMAND_GROUPS = {0x000: 0x003, 0x100: 0x103, 0x200: 0x205, 0x300: 0x302, 0x400: 0x404}

# struct mpp_msg_v1 flags
FLAGS_MULTI_MSG, FLAGS_LAST_MSG = 0x1, 0x2
FLAGS_REG_FD_NO_TRANS, FLAGS_SCL_FD_NO_TRANS, FLAGS_REG_NO_OFFSET = 0x4, 0x8, 0x10
FLAGS_POLL_NON_BLOCK = 0x20   # user library only
FLAGS_SECURE_MODE = 0x10000

# enum MPP_DEVICE_TYPE: the client types an application asks for
DEVICE_RKVDEC, DEVICE_RKVENC = 9, 16

# enum ENC_INFO_TYPE and CODEC_INFO_FLAGS (SEND_CODEC_INFO items)
ENC_INFO_WIDTH, ENC_INFO_HEIGHT, ENC_INFO_FORMAT, ENC_INFO_FPS_IN, ENC_INFO_FPS_OUT = 1, 2, 3, 4, 5
ENC_INFO_RC_MODE, ENC_INFO_BITRATE, ENC_INFO_GOP_SIZE, ENC_INFO_FPS_CALC, ENC_INFO_PROFILE = 6, 7, 8, 9, 10
CODEC_INFO_FLAG_NUMBER, CODEC_INFO_FLAG_STRING = 1, 2


class mpp_msg_v1(ctypes.Structure):
    _fields_ = [("cmd", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("size", ctypes.c_uint32),
                ("offset", ctypes.c_uint32), ("data_ptr", ctypes.c_uint64)]


class reg_offset_elem(ctypes.Structure):
    """MPP's RegOffsetInfo: a register index and the byte offset to add to its buffer's IOVA."""
    _fields_ = [("index", ctypes.c_uint32), ("offset", ctypes.c_uint32)]


class rcb_info_elem(ctypes.Structure):
    """MPP's RcbInfo: a row/column buffer register and the size of its segment."""
    _fields_ = [("index", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class codec_info_elem(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("flag", ctypes.c_uint32), ("data", ctypes.c_uint64)]


assert ctypes.sizeof(mpp_msg_v1) == 24 and ctypes.sizeof(codec_info_elem) == 16


def info_string(text: str) -> int:
    """hal_info_to_string(): a string of at most 7 characters in the u64's bytes."""
    return int.from_bytes(text.encode()[:7].ljust(8, b"\0"), "little")


# -- register files --------------------------------------------------------------------------
# RKVDEC2 on RK3588 (mpp_rkvdec2.h, rkvdec_v2_hw_info: the format in reg 9's low 10 bits:
# 0 H.265, 1 H.264, 2 VP9) and its fd translation tables (trans_tbl_h264d/h265d/vp9d).
DEC_REG_NUM = 360                # u32 reg[RKVDEC_REG_NUM] of a task (rkvdec_v2_hw_info: reg_end 278)
DEC_REG_FORMAT = 9
DEC_FORMAT = {"hevc": 0, "h264": 1, "vp9": 2}
_DEC_TRANS_COMMON = (*range(128, 143), 161, *range(163, 200))
DEC_TRANS = {0: _DEC_TRANS_COMMON, 1: _DEC_TRANS_COMMON,
             2: (*range(128, 143), 160, 162, *range(164, 173), *range(180, 200))}
# Where MPP's vdpu34x HALs put their buffers (mpp/hal/rkdec/inc/vdpu34x_com.h, vdpu34x_h265d.h):
DEC_REG_STREAM, DEC_REG_RLCWRITE, DEC_REG_DECOUT, DEC_REG_COLMV_CUR, DEC_REG_ERROR_REF = 128, 129, 130, 131, 132
DEC_REG_RCB = tuple(range(133, 143))          # intra, transd row/col, streamd, inter row/col, dblk, sao, fbc, filter col
DEC_REG_TABLES = (161, 163, 197)              # pps, rps, cabac table: one buffer at offsets (HEVC, H.264)
DEC_REG_REFS = tuple(range(164, 180))         # reference frames
DEC_REG_COLMV_REFS = tuple(range(181, 197))   # their motion vectors
# VP9 (vdpu34x_vp9d.h): default and loop probabilities, the probe (count) buffer, segment ids.
VP9_REG_PROB_DEFAULT, VP9_REG_PROB_LAST, VP9_REG_PROB_UPDATE = 160, 162, 172
VP9_REG_COUNT = 167
VP9_REG_SEGID = (168, 169)                    # last, current: one buffer at two offsets
VP9_REG_REFS = (164, 165, 166)                # last, golden, altref
VP9_REG_COLMV_REF = 170

# RKVENC2 (vepu580): registers in classes; fds sit in the picture class (byte 0x280 on, register
# 160 on) at the translation table's indices 0..23, the format in the class's 0x300 bit 0
# (0 H.264, 1 H.265) (rkvenc_v2_hw_info, trans_tbl_h264e_v2/h265e_v2).
ENC_REG_BYTES = 0x5358                        # up to the debug class's end
ENC_PIC_BASE = 0x280 // 4
ENC_REG_FORMAT = 0x300 // 4
ENC_TRANS = tuple(ENC_PIC_BASE + i for i in range(24))
ENC_FORMAT = {"h264": 0, "hevc": 1}
# The simulation's use of them (vepu580's adr_src0..2, rfpw, rfpr, cmvw/cmvr, dspw/dspr, bsbt..bsbs):
ENC_REG_SRC = (160, 161, 162)
ENC_REG_RECON_WRITE, ENC_REG_REF_READ = (163, 164), (165, 166)
ENC_REG_CMV_WRITE, ENC_REG_CMV_READ = 167, 168
ENC_REG_THUMB_WRITE, ENC_REG_THUMB_READ = 169, 170
ENC_REG_BITSTREAM = (172, 173, 174, 175)
