/* A V4L2 decoder client written against the kernel UAPI only (linux/videodev2.h), as a real
 * application would be: S_FMT, REQBUFS, STREAMON, a few QBUF/DQBUF, then V4L2_CID_MEMORY_USAGE
 * through VIDIOC_G_EXT_CTRLS. For each line "usage" on stdin it prints "usage BYTES tgid TGID";
 * any other line (or EOF) closes it, so the caller can look at the tree while the instance lives
 * and ask again until the control has caught up with it (notifications are coalesced).
 * Usage: v4l2_client /path/to/decoder-node FRAMES */
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#ifndef V4L2_CID_MEMORY_USAGE
#define V4L2_CID_MEMORY_USAGE (V4L2_CID_BASE + 44) /* from the RFC, not yet in this header */
#endif

static int fd;

static void xioctl(unsigned long cmd, void *arg, const char *what)
{
	if (ioctl(fd, cmd, arg) < 0) {
		fprintf(stderr, "%s: %s\n", what, strerror(errno));
		exit(1);
	}
}

static void queue(int type, int index, unsigned int bytesused)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	struct v4l2_buffer buf;

	memset(&buf, 0, sizeof(buf));
	memset(planes, 0, sizeof(planes));
	buf.type = type;
	buf.index = index;
	buf.memory = V4L2_MEMORY_MMAP;
	buf.m.planes = planes;
	buf.length = type == V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE ? 1 : 2;
	planes[0].bytesused = bytesused;
	xioctl(VIDIOC_QBUF, &buf, "VIDIOC_QBUF");
}

static int dequeue(int type)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	struct v4l2_buffer buf;

	memset(&buf, 0, sizeof(buf));
	buf.type = type;
	buf.memory = V4L2_MEMORY_MMAP;
	buf.m.planes = planes;
	buf.length = VIDEO_MAX_PLANES;
	xioctl(VIDIOC_DQBUF, &buf, "VIDIOC_DQBUF");
	return buf.index;
}

static int reqbufs(int type, int count)
{
	struct v4l2_requestbuffers req = { .count = count, .type = type, .memory = V4L2_MEMORY_MMAP };

	xioctl(VIDIOC_REQBUFS, &req, "VIDIOC_REQBUFS");
	return req.count;
}

int main(int argc, char **argv)
{
	struct v4l2_format fmt;
	struct v4l2_control min = { .id = V4L2_CID_MIN_BUFFERS_FOR_CAPTURE };
	struct v4l2_ext_control usage = { .id = V4L2_CID_MEMORY_USAGE };
	struct v4l2_ext_controls ctrls = { .which = V4L2_CTRL_WHICH_CUR_VAL, .count = 1, .controls = &usage };
	int out_type = V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE, cap_type = V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE;
	int frames = argc > 2 ? atoi(argv[2]) : 5, outputs, captures, i;
	char line[16];

	fd = open(argv[1], O_RDWR);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	memset(&fmt, 0, sizeof(fmt));
	fmt.type = out_type;
	fmt.fmt.pix_mp.pixelformat = V4L2_PIX_FMT_H264;
	fmt.fmt.pix_mp.width = 1920;
	fmt.fmt.pix_mp.height = 1080;
	xioctl(VIDIOC_S_FMT, &fmt, "VIDIOC_S_FMT");
	outputs = reqbufs(out_type, 8);
	xioctl(VIDIOC_STREAMON, &out_type, "VIDIOC_STREAMON(OUTPUT)");
	for (i = 0; i < outputs; i++)
		queue(out_type, i, 100000);
	memset(&fmt, 0, sizeof(fmt));
	fmt.type = cap_type;
	xioctl(VIDIOC_G_FMT, &fmt, "VIDIOC_G_FMT(CAPTURE)");
	xioctl(VIDIOC_G_CTRL, &min, "VIDIOC_G_CTRL");
	captures = reqbufs(cap_type, min.value);
	for (i = 0; i < captures; i++)
		queue(cap_type, i, 0);
	xioctl(VIDIOC_STREAMON, &cap_type, "VIDIOC_STREAMON(CAPTURE)");
	for (i = 0; i < frames; i++) {
		queue(out_type, dequeue(out_type), 100000);
		queue(cap_type, dequeue(cap_type), 0);
	}
	while (fgets(line, sizeof(line), stdin) && strcmp(line, "usage\n") == 0) {
		xioctl(VIDIOC_G_EXT_CTRLS, &ctrls, "VIDIOC_G_EXT_CTRLS");
		printf("usage %lld tgid %d size %ux%u\n", (long long)usage.value64, getpid(),
		       fmt.fmt.pix_mp.width, fmt.fmt.pix_mp.height);
		fflush(stdout);
	}
	close(fd);
	return 0;
}
