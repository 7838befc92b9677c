"""Renderers of Rockchip's ``proc/mpp_service/`` (drivers/video/rockchip/mpp/mpp_service.c,
CONFIG_ROCKCHIP_MPP_PROC_FS), and the write handler of its u32 files (mpp_common.c).

Two BSP generations print ``sessions-summary`` differently (docs/spec/rockchip-rk3588.md):
- ``dump`` (6.1, ``mpp_show_session_summary()``): per session on the service's list that has a
  device and driver data, ``mpp_dump_session()`` and, for encoders, their ``dump_session()`` table;
- ``guide`` (5.10, the Rockchip DMABUF guide's RK3588 board): one ``<dev> Total: <N> KiB`` line
  per device with sessions. No published source prints it; the guide is its source.
"""
from __future__ import annotations

import errno

from memtrackfs.errors import KernelError
from memtrackfs.model.mpp import ENC_INFO_BUTT, MPP_DEVICE_BUTT, MppService, MppSession

# mpp_common.c: mpp_device_name[] and enc_info_item_name[]
_ENC_INFO_NAMES = ("null", "width", "height", "format", "fps_in", "fps_out", "rc_mode", "bitrate", "gop_size",
                   "fps_calc", "profile")
CODEC_INFO_FLAG_NUMBER, CODEC_INFO_FLAG_STRING = 1, 2
_DASHES = "-" * 54


def render_mpp_version(service: MppService) -> bytes:
    """mpp_show_version(): ``"%s\\n"`` of mpp_version."""
    return f"{service.board.version}\n".encode()


def _pa(address: int) -> str:
    return f"0x{address:016x}"  # %pa of a 64-bit phys_addr_t/dma_addr_t


def _dump_session(session: MppSession, out: list[str]) -> None:
    """mpp_dump_session(): the used list (least recently used first); the unused list holds only
    released slots, whose dma-buf is NULL, so it prints nothing."""
    assert session.device is not None
    out.append("session iova range dump:\n")
    for i, buf in enumerate((session.buffers or {}).values()):
        size = buf.size
        amount, unit = (size >> 10, "KiB") if size >= 1024 else (size, "Bytes")
        out.append(f"{i:4d}: {_pa(buf.iova)}..{_pa(buf.iova + size - 1)} ({amount:10d} {unit})\n")
    out.append(f"session: pid={session.pid} index={session.index}\n")
    out.append(f" device: {session.device.dev_name}\n")
    out.append(f" memory: {session.memory >> 20} MiB\n")


def _info_text(flag: int, data: int) -> str:
    if flag == CODEC_INFO_FLAG_NUMBER:
        value = data & 0xFFFFFFFF
        return f"{value - (1 << 32) if value >> 31 else value:8d}|"  # a u32 printed with %d
    if flag == CODEC_INFO_FLAG_STRING:
        text = data.to_bytes(8, "little").split(b"\0")[0].decode("latin-1")  # the u64 read as chars
        return f"{text:>8}|"
    return f"{'null':>8}|"


def _encoder_table(session: MppSession, out: list[str]) -> None:
    """rkvenc_dump_session() / vepu_dump_session(): 108 dashes, the flagged items' names, values."""
    assert session.device is not None
    shown = [i for i in range(ENC_INFO_BUTT) if i in session.codec_info]
    out.append(_DASHES + _DASHES + "\n")
    out.append(f"|{'session':>8}|{'device':>8}|" + "".join(f"{_ENC_INFO_NAMES[i]:>8}|" for i in shown) + "\n")
    out.append(f"|{session.index:8d}|{session.device.type_name:>8}|"
               + "".join(_info_text(*session.codec_info[i]) for i in shown) + "\n")


def render_mpp_sessions_summary(service: MppService) -> bytes:
    """``--bsp 6.1``: mpp_show_session_summary(); ``5.10``: the guide's ``"%s Total: %lu KiB\\n"`` per
    device, which no published BSP source prints (docs/spec/rockchip-rk3588.md §3.1)."""
    out: list[str] = []
    listed = [s for s in service.sessions.values() if s.listed]
    if service.board.summary == "guide":
        totals: dict[str, int] = {}
        for session in listed:
            assert session.device is not None
            totals[session.device.dev_name] = totals.get(session.device.dev_name, 0) + session.memory
        out.extend(f"{dev_name} Total: {total >> 10} KiB\n" for dev_name, total in totals.items())
    else:
        for session in listed:
            _dump_session(session, out)
            assert session.device is not None
            if session.device.dumps_session:
                _encoder_table(session, out)
    return "".join(out).encode()


# enum MPP_DEV_COMMAND_TYPE (include/uapi/linux/rk-mpp.h) as mpp_show_support_cmd() prints it.
_SUPPORT_CMD = (
    ("QUERY_HW_SUPPORT", 0x000), ("QUERY_HW_ID", 0x001), ("QUERY_CMD_SUPPORT", 0x002), ("QUERY_BUTT", 0x003), None,
    ("INIT_CLIENT_TYPE", 0x100), ("INIT_TRANS_TABLE", 0x102), ("INIT_BUTT", 0x103), None,
    ("SET_REG_WRITE", 0x200), ("SET_REG_READ", 0x201), ("SET_REG_ADDR_OFFSET", 0x202), ("SEND_BUTT", 0x205), None,
    ("POLL_HW_FINISH", 0x300), ("POLL_BUTT", 0x302), None,
    ("RESET_SESSION", 0x400), ("TRANS_FD_TO_IOVA", 0x401), ("RELEASE_FD", 0x402), ("SEND_CODEC_INFO", 0x403),
    ("CONTROL_BUTT", 0x404),
)


def render_mpp_supports_cmd() -> bytes:
    """mpp_show_support_cmd(): constant text; each name padded to 22 columns."""
    lines = ["------------- SUPPORT CMD -------------\n"]
    for item in _SUPPORT_CMD:
        lines.append("----\n" if item is None else f"{item[0] + ':':<22}0x{item[1]:08x}\n")
    return "".join(lines).encode()


def render_mpp_supports_device(service: MppService) -> bytes:
    """mpp_show_support_device(): ``"DEVICE[%2d]:%-10s"`` per registered type, ``"HW_ID:0x%08x"`` if non-zero."""
    lines = ["---- SUPPORT DEVICES ----\n"]
    for device_type in range(MPP_DEVICE_BUTT):
        device = service.board.device(device_type)
        if device is not None:
            hw_id = f"HW_ID:0x{device.hw_id:08x}" if device.hw_id else ""
            lines.append(f"DEVICE[{device_type:2d}]:{device.type_name:<10}{hw_id}\n")
    return "".join(lines).encode()


def render_mpp_load(service: MppService) -> bytes:
    """mpp_show_device_load(): a hint while load_interval is 0, else each core's figures."""
    if not service.load_interval:
        return (b"please set load_interval first!!!\n"
                b"e.g. set 1000ms to load_interval:\n"
                b"echo 1000 > /proc/mpp_service/load_interval\n")
    lines = []
    for dev_name in service.board.load_cores:
        load, utilization = service.load.get(dev_name, (0, 0))
        lines.append(f"{dev_name:<25} load: {load // 100:3d}.{load % 100:02d}% "
                     f"utilization: {utilization // 100:3d}.{utilization % 100:02d}%\n")
    return "".join(lines).encode()


def render_u32(value: int) -> bytes:
    """procfs_fops_u32's show: ``"%d\\n"`` of the u32 (so values past 2^31 print negative)."""
    return b"%d\n" % (value - (1 << 32) if value >> 31 else value)


_KSTRTOX_BUF = 34  # kstrtou32_from_user(): buf[1 + 32 + 1 + 1], of which count <= sizeof(buf) - 1 is parsed


def parse_u32_write(data: bytes) -> int:
    """kstrtou32_from_user(buf, count, 0, &val): base 0 (0x hex, leading-0 octal, decimal), an
    optional '+', one trailing newline. EINVAL for anything else, ERANGE past U32_MAX."""
    text = data[:_KSTRTOX_BUF]
    if text.endswith(b"\n"):
        text = text[:-1]
    if text.startswith(b"+"):
        text = text[1:]
    base, digits = 10, text
    if text[:2].lower() == b"0x":
        base, digits = 16, text[2:]
    elif text.startswith(b"0") and len(text) > 1:
        base, digits = 8, text[1:]
    allowed = b"0123456789abcdefABCDEF"[:10 if base == 10 else 22] if base != 8 else b"01234567"
    if not digits or any(ch not in allowed for ch in digits):
        raise KernelError(errno.EINVAL, f"not a number: {data[:40]!r}")
    value = int(digits, base)
    if value > 0xFFFFFFFF:
        raise KernelError(errno.ERANGE, f"{value} is more than a u32 holds")
    return value
