"""The simulated VPU's instances, driven through the V4L2 ioctl ABI against an in-memory tracker.

``FakeMemTrack`` keeps the RFC's tree (nodes with own bytes and counts, named leaves) and fires
notify callbacks at once; ``UserSpace`` plays the calling process's memory for the arrays behind
pointers; ``Client`` issues ioctls the way an application does, with the uapi structs.
"""
from __future__ import annotations

import errno
import threading
import time

import pytest
from helpers.vpu_rig import (
    APP,
    CAP,
    MIB,
    OUT,
    Client,
    FakeMemTrack,
    Rig,
    instance_of,
    make_rig,
    parse_header,
    start_decoder,
)

from vpu_sim import uapi
from vpu_sim.driver.accounting import Memory
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.driver.amphion.decoder import Decoder
from vpu_sim.driver.amphion.device import VpuDevice
from vpu_sim.driver.amphion.ioctl_formats import kernel_version
from vpu_sim.driver.amphion.ioctls import VideoFile
from vpu_sim.driver.amphion.model import CoreKind
from vpu_sim.driver.memtrack import Caller, MemoryArea


@pytest.fixture
def rig() -> Rig:
    return make_rig()


def test_probe_creates_root_with_carveouts(rig: Rig) -> None:
    root = rig.memtrack.nodes[rig.device.root]
    assert root.name == "amphion-vpu"
    assert [(n, b) for n, b, _ in root.leaves] == [("fw", 0x2000000), ("rpc", 0x100000),
                                                   ("fw", 0x200000), ("rpc", 0x700000)]
    assert rig.cma.used == 0  # carve-outs never come out of the CMA area
    rig.device.remove()
    assert rig.memtrack.nodes == {}


def test_1080p_h264_decode_has_the_models_leaf_sizes(rig: Rig) -> None:
    client = rig.open(CoreKind.DECODER)
    mt, node = rig.memtrack, instance_of(client)
    assert mt.nodes[node].name == "instance" and mt.nodes[node].caller == APP
    assert mt.watches[node][0] == 200
    assert mt.usage(node) == 0                                      # open allocates nothing

    client.s_fmt(OUT, uapi.V4L2_PIX_FMT_H264, 1920, 1080)
    assert client.reqbufs(OUT, 2) == (0, 8)                         # raised to the minimum
    output = mt.queue_node(node, "output")
    assert (output.own, output.count) == (8 * 2_076_672, 8)         # 2,073,600 page-aligned
    assert client.stream(uapi.VIDIOC_STREAMON, OUT) == 0
    assert mt.leaves(node, "bitstream-ring-buffer") == [0xC00000]
    assert mt.leaves(node, "udata") == [0x1000]
    assert mt.leaves(node, "mbi") == []

    assert client.qbuf(OUT, 0, 5000) == 0                           # carries the sequence header
    assert mt.leaves(node, "mbi") == []                             # parsed within a frame period
    parse_header(client)
    assert mt.leaves(node, "mbi") == [917_504] * 7
    assert mt.leaves(node, "dcp") == [2_040_000] * 2
    assert client.g_ctrl(uapi.V4L2_CID_MIN_BUFFERS_FOR_CAPTURE) == (0, 7)
    cap = client.g_fmt(CAP)
    # The decoded frame is whole macroblocks; the stream's 1080 lines are its compose rectangle.
    assert (cap.width, cap.height, cap.pixelformat, cap.num_planes) == (1920, 1088, uapi.V4L2_PIX_FMT_NV12M_8L128, 2)
    compose = client.ok(uapi.VIDIOC_G_SELECTION, uapi.v4l2_selection(type=CAP, target=uapi.V4L2_SEL_TGT_COMPOSE)).r
    assert (compose.width, compose.height) == (1920, 1080)
    assert [cap.plane_fmt[i].sizeimage for i in range(2)] == [2_359_296, 1_310_720]
    assert cap.plane_fmt[0].bytesperline == 2048

    assert client.reqbufs(CAP, 4) == (0, 7)
    capture = mt.queue_node(node, "capture")
    assert (capture.own, capture.count) == (7 * (2_359_296 + 1_310_720), 14)
    expected = 8 * 2_076_672 + 0xC00000 + 0x1000 + 7 * 917_504 + 2 * 2_040_000 + 7 * 3_670_016
    assert mt.usage(node) == expected
    assert client.memory_usage() == expected                        # through the notify callback
    assert rig.cma.used == expected


def test_1080p_encode_has_the_models_leaf_sizes(rig: Rig) -> None:
    client = rig.open(CoreKind.ENCODER)
    mt, node = rig.memtrack, instance_of(client)
    out = client.s_fmt(OUT, uapi.V4L2_PIX_FMT_NV12M, 1920, 1080)
    assert [out.plane_fmt[i].sizeimage for i in range(2)] == [2_073_600, 1_036_800]
    cap = client.g_fmt(CAP)
    assert (cap.width, cap.height, cap.pixelformat) == (1920, 1080, uapi.V4L2_PIX_FMT_H264)
    assert client.reqbufs(OUT, 1) == (0, 6)
    assert client.reqbufs(CAP, 6) == (0, 6)
    assert mt.queue_node(node, "output").own == 6 * (2_076_672 + 1_040_384)
    assert client.stream(uapi.VIDIOC_STREAMON, OUT) == 0
    assert mt.leaves(node, "bitstream-ring-buffer") == []            # only when both queues stream
    assert client.stream(uapi.VIDIOC_STREAMON, CAP) == 0
    assert mt.leaves(node, "bitstream-ring-buffer") == [0x300000]
    assert mt.leaves(node, "enc-frame") == [3_110_400] * 6
    assert mt.leaves(node, "ref-frame") == [3_110_400] * 3
    assert client.memory_usage() == mt.usage(node)


def test_encoder_clamps_to_1920_and_ring_follows_cpb(rig: Rig) -> None:
    client = rig.open(CoreKind.ENCODER)
    out = client.s_fmt(OUT, uapi.V4L2_PIX_FMT_NV12M, 3840, 2160)
    assert (out.width, out.height) == (1920, 1920)
    err, _, items = client.ext_ctrls(uapi.VIDIOC_S_EXT_CTRLS, [(uapi.V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE, 99999)])
    assert err == 0 and items[0].value == 10240                      # clamped to the range
    client.reqbufs(OUT, 6)
    client.reqbufs(CAP, 6)
    client.stream(uapi.VIDIOC_STREAMON, OUT)
    client.stream(uapi.VIDIOC_STREAMON, CAP)
    assert rig.memtrack.leaves(instance_of(client), "bitstream-ring-buffer") == [10240 * 1024 * 3]


# -- frames, drain, resolution change --------------------------------------------------------------
def test_frames_come_at_the_frame_rate_with_timestamps(rig: Rig) -> None:
    client = rig.open(CoreKind.DECODER)
    start_decoder(client)
    assert client.qbuf(OUT, 1, 4000, timestamp=(2, 0)) == 0
    err, buf, planes = client.dqbuf(CAP)
    assert err == 0 and (buf.index, buf.sequence, buf.timestamp.tv_sec) == (0, 0, 1)
    assert [p.bytesused for p in planes] == [2_359_296, 1_310_720]
    assert buf.flags & uapi.V4L2_BUF_FLAG_TIMESTAMP_COPY and not buf.flags & uapi.V4L2_BUF_FLAG_LAST
    assert client.dqbuf(CAP)[0] == errno.EAGAIN                     # the next one is 1/30 s away
    assert client.file.instance.next_event_time() == pytest.approx(rig.clock.now + 1 / 30)
    rig.clock.now += 1 / 30
    err, buf, _ = client.dqbuf(CAP)
    assert err == 0 and (buf.sequence, buf.timestamp.tv_sec) == (1, 2)
    err, buf, planes = client.dqbuf(OUT)
    assert err == 0 and buf.index == 0 and planes[0].bytesused == 5000


def test_querybuf_reports_lengths_and_mmap_offsets(rig: Rig) -> None:
    client = rig.open(CoreKind.DECODER)
    client.s_fmt(OUT, uapi.V4L2_PIX_FMT_H264, 1920, 1080)
    client.reqbufs(OUT, 8)
    err, buf, planes = client.querybuf(OUT, 1)
    assert err == 0 and buf.length == 1 and planes[0].length == 2_073_600
    assert planes[0].m.mem_offset == 2_076_672                      # after buffer 0, page-aligned
    client.reqbufs(CAP, 8)
    err, buf, planes = client.querybuf(CAP, 0)
    assert err == 0 and planes[0].m.mem_offset == 1 << 30           # DST_QUEUE_OFF_BASE
    assert planes[1].m.mem_offset == (1 << 30) + planes[0].length
    assert client.querybuf(CAP, 8)[0] == errno.EINVAL
    assert client._buffer(uapi.VIDIOC_QUERYBUF, CAP, 0, nplanes=1)[0] == errno.EINVAL


def test_decoder_stop_flags_the_last_buffer_then_epipe(rig: Rig) -> None:
    client = rig.open(CoreKind.DECODER)
    start_decoder(client)
    client.qbuf(OUT, 1, 4000)
    err, out = client.call(uapi.VIDIOC_DECODER_CMD, uapi.v4l2_decoder_cmd(cmd=uapi.V4L2_DEC_CMD_STOP))
    assert err == 0
    assert client.call(uapi.VIDIOC_DECODER_CMD, uapi.v4l2_decoder_cmd(cmd=uapi.V4L2_DEC_CMD_STOP))[0] == errno.EBUSY
    rig.clock.now += 1
    first, second = client.dqbuf(CAP)[1], client.dqbuf(CAP)[1]
    assert not first.flags & uapi.V4L2_BUF_FLAG_LAST
    assert second.flags & uapi.V4L2_BUF_FLAG_LAST
    assert client.dqbuf(CAP)[0] == errno.EPIPE
    assert client.call(uapi.VIDIOC_DECODER_CMD, uapi.v4l2_decoder_cmd(cmd=uapi.V4L2_DEC_CMD_START))[0] == 0
    assert client.dqbuf(CAP)[0] == errno.EAGAIN


def test_stop_with_nothing_queued_returns_an_empty_last_buffer(rig: Rig) -> None:
    client = rig.open(CoreKind.DECODER)
    start_decoder(client)
    client.dqbuf(CAP)
    client.call(uapi.VIDIOC_DECODER_CMD, uapi.v4l2_decoder_cmd(cmd=uapi.V4L2_DEC_CMD_STOP))
    err, buf, planes = client.dqbuf(CAP)
    assert err == 0 and buf.flags & uapi.V4L2_BUF_FLAG_LAST and planes[0].bytesused == 0
    assert client.dqbuf(CAP)[0] == errno.EPIPE
    assert client.stream(uapi.VIDIOC_STREAMOFF, CAP) == 0            # STREAMOFF clears the LAST state
    assert client.stream(uapi.VIDIOC_STREAMON, CAP) == 0
    assert client.dqbuf(CAP)[0] == errno.EAGAIN


def test_encoder_stop_and_keyframes(rig: Rig) -> None:
    client = rig.open(CoreKind.ENCODER)
    client.s_fmt(OUT, uapi.V4L2_PIX_FMT_NV12M, 1920, 1080)
    client.reqbufs(OUT, 6)
    client.reqbufs(CAP, 6)
    client.stream(uapi.VIDIOC_STREAMON, OUT)
    client.stream(uapi.VIDIOC_STREAMON, CAP)
    for index in range(6):
        client.qbuf(CAP, index)
    client.qbuf(OUT, 0, nplanes=2)
    client.qbuf(OUT, 1, nplanes=2)
    assert client.call(uapi.VIDIOC_ENCODER_CMD, uapi.v4l2_encoder_cmd(cmd=uapi.V4L2_ENC_CMD_STOP))[0] == 0
    rig.clock.now += 1
    err, first, planes = client.dqbuf(CAP)
    assert err == 0 and first.flags & uapi.V4L2_BUF_FLAG_KEYFRAME and planes[0].bytesused == 3_110_400 // 50
    err, second, _ = client.dqbuf(CAP)
    assert second.flags & uapi.V4L2_BUF_FLAG_PFRAME and second.flags & uapi.V4L2_BUF_FLAG_LAST
    assert client.dqbuf(CAP)[0] == errno.EPIPE
    assert client.call(uapi.VIDIOC_DECODER_CMD, uapi.v4l2_decoder_cmd())[0] == errno.ENOTTY


def test_resolution_change_reallocates_mbi_and_dcp(rig: Rig) -> None:
    client = rig.open(CoreKind.DECODER)
    start_decoder(client)
    mt, node, decoder = rig.memtrack, instance_of(client), client.file.instance
    assert isinstance(decoder, Decoder)
    client.dqbuf(CAP)
    decoder.change_resolution(3840, 2160)
    header = amphion.sequence_header(uapi.V4L2_PIX_FMT_H264, 3840, 2160)
    assert mt.leaves(node, "mbi") == [header.mbi_bytes] * header.mbi_count
    assert mt.leaves(node, "dcp") == [32400 * 250] * 2
    err, buf, planes = client.dqbuf(CAP)
    assert err == 0 and buf.flags & uapi.V4L2_BUF_FLAG_LAST and planes[0].bytesused == 0
    assert client.dqbuf(CAP)[0] == errno.EPIPE
    cap = client.g_fmt(CAP)
    assert (cap.width, cap.height, cap.plane_fmt[0].sizeimage) == (3840, 2160, 8_355_840)
    assert client.stream(uapi.VIDIOC_STREAMOFF, CAP) == 0
    assert client.reqbufs(CAP, 0) == (0, 0)
    assert mt.queue_node(node, "capture").own == 0
    assert client.reqbufs(CAP, 1) == (0, header.min_capture_buffers)
    client.stream(uapi.VIDIOC_STREAMON, CAP)
    client.qbuf(CAP, 0)
    client.qbuf(OUT, 1, 4000)
    rig.clock.now += 1
    err, _, planes = client.dqbuf(CAP)
    assert err == 0 and [p.bytesused for p in planes] == [8_355_840, 4_423_680]


def test_resolution_change_to_the_same_buffer_sizes_still_reallocates(rig: Rig) -> None:
    client = rig.open(CoreKind.DECODER)
    start_decoder(client)
    mt, decoder = rig.memtrack, client.file.instance
    assert isinstance(decoder, Decoder)
    mt.calls.clear()
    decoder.change_resolution(1920, 1088)                           # same 8L128 planes, same MBI size
    mbi_calls = [(op, size) for op, _, size, name in mt.calls if name == "mbi"]
    assert mbi_calls == [("sub", 917_504)] * 7 + [("add", 917_504)] * 7


# -- lifecycle and errors --------------------------------------------------------------------------
def test_streamoff_keeps_internal_buffers_and_close_frees_everything(rig: Rig) -> None:
    client = rig.open(CoreKind.DECODER)
    start_decoder(client)
    mt, node = rig.memtrack, instance_of(client)
    client.stream(uapi.VIDIOC_STREAMOFF, OUT)
    client.stream(uapi.VIDIOC_STREAMOFF, CAP)
    assert mt.leaves(node, "bitstream-ring-buffer") and len(mt.leaves(node, "mbi")) == 7
    assert client.reqbufs(OUT, 0) == (0, 0)
    assert mt.queue_node(node, "output").count == 0
    client.file.release()
    assert node not in mt.nodes and node in mt.destroyed            # no leak: FakeMemTrack checks it
    assert rig.cma.used == 0
    assert client.call(uapi.VIDIOC_QUERYCAP)[0] == errno.ENODEV


def test_errors_as_the_kernel_returns_them(rig: Rig) -> None:
    client = rig.open(CoreKind.DECODER)
    assert client.call(0xC0DE5600)[0] == errno.ENOTTY
    assert client.call(uapi.VIDIOC_ENCODER_CMD, uapi.v4l2_encoder_cmd())[0] == errno.ENOTTY
    assert client.call(uapi.VIDIOC_G_FMT, uapi.v4l2_format(type=uapi.V4L2_BUF_TYPE_VIDEO_CAPTURE))[0] == errno.EINVAL
    assert client.reqbufs(uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT, 4)[0] == errno.EINVAL
    assert client.reqbufs(OUT, 4, uapi.V4L2_MEMORY_USERPTR)[0] == errno.EINVAL
    assert client.stream(uapi.VIDIOC_STREAMON, OUT) == errno.EINVAL   # no buffers yet
    assert client.dqbuf(OUT)[0] == errno.EINVAL                       # not streaming
    client.reqbufs(OUT, 8)
    f = uapi.v4l2_format(type=OUT)
    f.fmt.pix_mp.pixelformat, f.fmt.pix_mp.width, f.fmt.pix_mp.height = uapi.V4L2_PIX_FMT_HEVC, 640, 480
    assert client.call(uapi.VIDIOC_S_FMT, f)[0] == errno.EBUSY       # buffers allocated
    assert client.qbuf(OUT, 0, 3_000_000) == errno.EINVAL            # bytesused > length
    assert client.qbuf(OUT, 8) == errno.EINVAL
    assert client.qbuf(OUT, 0, 100) == 0
    assert client.qbuf(OUT, 0, 100) == errno.EINVAL                  # already queued
    assert client.stream(uapi.VIDIOC_STREAMON, OUT) == 0
    assert client.reqbufs(OUT, 8)[0] == errno.EBUSY
    err, out = client.call(uapi.VIDIOC_TRY_FMT, f)
    fmt = uapi.v4l2_format.from_buffer_copy(out).fmt.pix_mp
    assert err == 0 and (fmt.pixelformat, fmt.plane_fmt[0].sizeimage) == (uapi.V4L2_PIX_FMT_HEVC, 307_200)
    f.fmt.pix_mp.pixelformat = uapi.v4l2_fourcc("XXXX")
    fmt = uapi.v4l2_format.from_buffer_copy(client.call(uapi.VIDIOC_TRY_FMT, f)[1]).fmt.pix_mp
    assert fmt.pixelformat == uapi.V4L2_PIX_FMT_H264                   # unknown fourcc: the first format


def test_create_bufs_adds_buffers_of_the_given_size(rig: Rig) -> None:
    client = rig.open(CoreKind.DECODER)
    client.s_fmt(OUT, uapi.V4L2_PIX_FMT_H264, 1920, 1080)
    client.reqbufs(OUT, 8)
    create = uapi.v4l2_create_buffers(count=2, memory=uapi.V4L2_MEMORY_MMAP)
    create.format.type = OUT
    create.format.fmt.pix_mp.num_planes = 1
    create.format.fmt.pix_mp.plane_fmt[0].sizeimage = 4 * MIB
    result = client.ok(uapi.VIDIOC_CREATE_BUFS, create)
    assert (result.index, result.count) == (8, 2)
    assert rig.memtrack.queue_node(instance_of(client), "output").own == 8 * 2_076_672 + 2 * 4 * MIB
    create.format.fmt.pix_mp.plane_fmt[0].sizeimage = 1000
    assert client.call(uapi.VIDIOC_CREATE_BUFS, create)[0] == errno.EINVAL   # smaller than the format


def test_small_cma_fails_reqbufs_and_streamon_with_enomem() -> None:
    rig = make_rig(cma_bytes=8 * 2_076_672 + 5 * MIB)
    client = rig.open(CoreKind.DECODER)
    client.s_fmt(OUT, uapi.V4L2_PIX_FMT_H264, 1920, 1080)
    assert client.reqbufs(OUT, 12) == (0, 10)                       # vb2 settles for what fits
    assert client.reqbufs(OUT, 0) == (0, 0)
    rig.cma.capacity = 7 * 2_076_672
    assert client.reqbufs(OUT, 8)[0] == errno.ENOMEM                # fewer than the minimum
    assert rig.cma.used == 0 and rig.memtrack.usage(instance_of(client)) == 0
    rig.cma.capacity = 8 * 2_076_672 + 5 * MIB
    assert client.reqbufs(OUT, 8) == (0, 8)
    assert client.stream(uapi.VIDIOC_STREAMON, OUT) == errno.ENOMEM  # the 12 MiB ring does not fit
    assert client.file.instance.queue(OUT).streaming is False
    assert rig.memtrack.leaves(instance_of(client), "bitstream-ring-buffer") == []


def test_firmware_requests_wait_for_memory() -> None:
    rig = make_rig(cma_bytes=8 * 2_076_672 + 0xC01000 + 3 * 917_504)
    client = rig.open(CoreKind.DECODER)
    client.s_fmt(OUT, uapi.V4L2_PIX_FMT_H264, 1920, 1080)
    client.reqbufs(OUT, 8)
    client.stream(uapi.VIDIOC_STREAMON, OUT)
    client.qbuf(OUT, 0, 100)
    parse_header(client)
    client.file.instance.advance()
    assert len(rig.memtrack.leaves(instance_of(client), "mbi")) == 3   # the rest stays pending
    rig.cma.capacity = None
    client.reqbufs(CAP, 7)
    client.stream(uapi.VIDIOC_STREAMON, CAP)
    client.qbuf(CAP, 0)
    assert client.dqbuf(CAP)[0] == 0
    assert len(rig.memtrack.leaves(instance_of(client), "mbi")) == 7


def test_a_ninth_stream_is_refused_at_streamon(rig: Rig) -> None:
    """Opens never fail for want of a firmware slot: STREAMON takes it (vpu_inst_register())."""
    decoders = [rig.open(CoreKind.DECODER, Caller(100 + i, 100 + i)) for i in range(9)]
    for client in decoders:
        assert client.reqbufs(OUT, 8)[0] == 0
    assert all(client.stream(uapi.VIDIOC_STREAMON, OUT) == 0 for client in decoders[:8])
    assert decoders[8].stream(uapi.VIDIOC_STREAMON, OUT) == errno.EINVAL
    encoder = rig.open(CoreKind.ENCODER)                            # the encoder core has its own slots
    encoder.reqbufs(OUT, 6)
    assert encoder.stream(uapi.VIDIOC_STREAMON, OUT) == 0
    decoders[0].file.release()
    assert decoders[8].stream(uapi.VIDIOC_STREAMON, OUT) == 0
    qm = make_rig("imx8qm")
    encoders = [qm.open(CoreKind.ENCODER) for _ in range(17)]
    for client in encoders:
        client.reqbufs(OUT, 6)
    assert [client.stream(uapi.VIDIOC_STREAMON, OUT) for client in encoders].count(errno.EINVAL) == 1
    assert len({core.device for core, insts in qm.device.instances.items() if insts}) == 2


# -- capabilities, formats, controls ---------------------------------------------------------------
def test_querycap_and_enum_fmt(rig: Rig) -> None:
    for kind, card in ((CoreKind.DECODER, b"amphion vpu decoder"), (CoreKind.ENCODER, b"amphion vpu encoder")):
        client = rig.open(kind)
        cap = uapi.v4l2_capability.from_buffer_copy(client.call(uapi.VIDIOC_QUERYCAP)[1])
        assert (cap.driver, cap.card, cap.bus_info) == (b"amphion-vpu", card, b"platform: amphion-vpu")
        assert cap.device_caps == (uapi.V4L2_CAP_VIDEO_M2M_MPLANE | uapi.V4L2_CAP_STREAMING
                                   | uapi.V4L2_CAP_EXT_PIX_FORMAT)
        assert cap.capabilities == cap.device_caps | uapi.V4L2_CAP_DEVICE_CAPS
    client = rig.open(CoreKind.DECODER)
    fourccs = []
    for index in range(10):
        err, out = client.call(uapi.VIDIOC_ENUM_FMT, uapi.v4l2_fmtdesc(index=index, type=CAP))
        if err:
            assert err == errno.EINVAL
            break
        fourccs.append(uapi.v4l2_fmtdesc.from_buffer_copy(out).pixelformat)
    assert fourccs == [uapi.V4L2_PIX_FMT_NV12M_8L128, uapi.V4L2_PIX_FMT_NV12M_10BE_8L128]
    desc = client.ok(uapi.VIDIOC_ENUM_FMT, uapi.v4l2_fmtdesc(index=0, type=OUT))
    assert desc.description == b"H.264" and desc.flags & uapi.V4L2_FMT_FLAG_COMPRESSED
    assert kernel_version("6.1.0-18-arm64") == 0x060100


def test_memory_usage_control(rig: Rig) -> None:
    client = rig.open(CoreKind.DECODER)
    assert client.g_ctrl(uapi.V4L2_CID_MEMORY_USAGE)[0] == errno.EINVAL   # 64-bit: EXT_CTRLS only
    start_decoder(client)
    assert client.memory_usage() == rig.memtrack.usage(instance_of(client)) > 0
    err, _, _ = client.ext_ctrls(uapi.VIDIOC_S_EXT_CTRLS, [(uapi.V4L2_CID_MEMORY_USAGE, 1)], int64=True)
    assert err == errno.EACCES
    q = client.ok(uapi.VIDIOC_QUERYCTRL, uapi.v4l2_queryctrl(id=uapi.V4L2_CID_MEMORY_USAGE))
    assert (q.type, q.name, q.maximum, q.flags & uapi.V4L2_CTRL_FLAG_READ_ONLY) == (
        uapi.V4L2_CTRL_TYPE_INTEGER64, b"Memory Usage", 0, uapi.V4L2_CTRL_FLAG_READ_ONLY)
    q = client.ok(uapi.VIDIOC_QUERY_EXT_CTRL, uapi.v4l2_query_ext_ctrl(id=uapi.V4L2_CID_MEMORY_USAGE))
    assert (q.minimum, q.maximum, q.elem_size) == (0, (1 << 63) - 1, 8)


def test_controls_enumerate_and_validate(rig: Rig) -> None:
    client = rig.open(CoreKind.ENCODER)
    ids, ctrl_id = [], 0
    while True:
        err, out = client.call(uapi.VIDIOC_QUERYCTRL, uapi.v4l2_queryctrl(id=ctrl_id | uapi.V4L2_CTRL_FLAG_NEXT_CTRL))
        if err:
            break
        ctrl_id = uapi.v4l2_queryctrl.from_buffer_copy(out).id
        ids.append(ctrl_id)
    # Each class opens with its class control, as handler_new_ref() adds them; ids increase.
    assert ids[:4] == [uapi.V4L2_CID_USER_CLASS, uapi.V4L2_CID_MIN_BUFFERS_FOR_CAPTURE,
                       uapi.V4L2_CID_MIN_BUFFERS_FOR_OUTPUT, uapi.V4L2_CID_MEMORY_USAGE]
    assert ids[4] == uapi.V4L2_CID_CODEC_CLASS and ids == sorted(ids) and len(ids) == 23
    assert uapi.V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE in ids and uapi.V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME in ids
    assert client.g_ctrl(uapi.V4L2_CID_MIN_BUFFERS_FOR_OUTPUT) == (0, 6)
    err, _ = client.call(uapi.VIDIOC_S_CTRL, uapi.v4l2_control(id=uapi.V4L2_CID_MIN_BUFFERS_FOR_OUTPUT, value=3))
    assert err == errno.EACCES
    err, c, _ = client.ext_ctrls(uapi.VIDIOC_G_EXT_CTRLS, [(uapi.V4L2_CID_MIN_BUFFERS_FOR_CAPTURE, 0), (0x00981234, 0)])
    assert (err, c.error_idx) == (errno.EINVAL, 2)   # G: a refusal before reading names no control
    err, c, _ = client.ext_ctrls(uapi.VIDIOC_TRY_EXT_CTRLS, [(uapi.V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE, 64),
                                                            (0x00981234, 0)])
    assert (err, c.error_idx) == (errno.EINVAL, 1)   # TRY names the failing control
    err, c, _ = client.ext_ctrls(uapi.VIDIOC_S_EXT_CTRLS, [(uapi.V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE, 2048),
                                                          (uapi.V4L2_CID_MIN_BUFFERS_FOR_CAPTURE, 9)])
    assert (err, c.error_idx) == (errno.EACCES, 2)   # S: error_idx = count, as v4l2-compliance checks
    assert client.g_ctrl(uapi.V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE) == (0, 1024)   # all or nothing
    err, _, items = client.ext_ctrls(uapi.VIDIOC_G_EXT_CTRLS, [(uapi.V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE, 0)],
                                     which=uapi.V4L2_CTRL_CLASS_USER)
    assert err == errno.EINVAL                                      # not of the USER class
    err, _, items = client.ext_ctrls(uapi.VIDIOC_TRY_EXT_CTRLS, [(uapi.V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE, 1)])
    assert err == 0 and items[0].value == 64
    assert client.g_ctrl(uapi.V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE) == (0, 1024)


# -- blocking DQBUF --------------------------------------------------------------------------------
def test_blocking_dqbuf_waits_for_the_frame_and_release_wakes_it() -> None:
    memtrack = FakeMemTrack()
    device = VpuDevice(Memory(memtrack, MemoryArea("cma"), MemoryArea("cma")), fps=50.0)
    client = Client(VideoFile(device, CoreKind.DECODER, APP))
    start_decoder(client)
    client.qbuf(OUT, 1, 4000)
    assert client.dqbuf(CAP, nonblocking=False)[1].sequence == 0    # after the header is parsed
    started = time.monotonic()
    err, buf, _ = client.dqbuf(CAP, nonblocking=False)
    assert err == 0 and buf.sequence == 1 and time.monotonic() - started > 0.005  # it waited for the frame

    results: list[int] = []
    waiter = threading.Thread(target=lambda: results.append(client.dqbuf(CAP, nonblocking=False)[0]))
    waiter.start()
    time.sleep(0.05)
    assert waiter.is_alive()                                        # nothing queued: it waits
    client.file.release()
    waiter.join(2)
    assert results == [errno.ENODEV]
