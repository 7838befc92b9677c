/*
 * minimal_fs: the floor for scripts/bench.py's small-file latency figure.
 *
 * A libfuse3 filesystem that serves one generated file, proc/rk_dmabuf/size, with the bytes given
 * on the command line, mounted the way memtrackfs mounts: high-level (path) API, multithreaded
 * loop, entry_timeout=0, attr_timeout=0, negative_timeout=0, every file opened with direct_io and
 * reporting st_size 0 (so a reader reads to EOF). Nothing else: no logic, no locks, no allocation
 * per request, so the ratio ours/this is the cost of memtrackfs over FUSE itself.
 *
 *   gcc -O2 -Wall minimal_fs.c $(pkg-config --cflags --libs fuse3) -o minimal_fs
 *   minimal_fs --content 'Total: 0 KiB\n' MNT -f      (fusermount3 -u MNT to stop)
 */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *content = "Total: 0 KiB\n";
static size_t content_len;

static const char *dirs[] = {"/", "/proc", "/proc/rk_dmabuf"};
static const char file_path[] = "/proc/rk_dmabuf/size";

static void *mfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	cfg->entry_timeout = 0;
	cfg->attr_timeout = 0;
	cfg->negative_timeout = 0;
	cfg->direct_io = 1;
	cfg->use_ino = 0;
	return NULL;
}

static int is_dir(const char *path)
{
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (strcmp(path, dirs[i]) == 0)
			return 1;
	return 0;
}

static int mfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	(void)fi;
	memset(st, 0, sizeof(*st));
	st->st_uid = getuid();
	st->st_gid = getgid();
	if (is_dir(path)) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		return 0;
	}
	if (strcmp(path, file_path) == 0) {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = 0; /* as procfs and memtrackfs: readers read to EOF */
		return 0;
	}
	return -ENOENT;
}

static int mfs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
		       struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	(void)off; (void)fi; (void)flags;
	const char *child = NULL;
	if (strcmp(path, "/") == 0)
		child = "proc";
	else if (strcmp(path, "/proc") == 0)
		child = "rk_dmabuf";
	else if (strcmp(path, "/proc/rk_dmabuf") == 0)
		child = "size";
	else
		return -ENOTDIR;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	fill(buf, child, NULL, 0, 0);
	return 0;
}

static int mfs_open(const char *path, struct fuse_file_info *fi)
{
	if (strcmp(path, file_path) != 0)
		return is_dir(path) ? -EISDIR : -ENOENT;
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		return -EACCES;
	fi->direct_io = 1;
	return 0;
}

static int mfs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)path; (void)fi;
	if (off < 0 || (size_t)off >= content_len)
		return 0;
	if (size > content_len - (size_t)off)
		size = content_len - (size_t)off;
	memcpy(buf, content + off, size);
	return (int)size;
}

static const struct fuse_operations ops = {
	.init = mfs_init,
	.getattr = mfs_getattr,
	.readdir = mfs_readdir,
	.open = mfs_open,
	.read = mfs_read,
};

/* "\n" in the --content argument stands for a newline, so a shell can pass it on one line. */
static char *unescape(const char *s)
{
	char *out = malloc(strlen(s) + 1), *o = out;
	if (!out)
		return NULL;
	for (; *s; s++) {
		if (s[0] == '\\' && s[1] == 'n') {
			*o++ = '\n';
			s++;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
	return out;
}

int main(int argc, char *argv[])
{
	if (argc >= 3 && strcmp(argv[1], "--content") == 0) {
		content = unescape(argv[2]);
		if (!content)
			return 1;
		argv[2] = argv[0];
		argv += 2;
		argc -= 2;
	}
	content_len = strlen(content);
	return fuse_main(argc, argv, &ops, NULL);
}
