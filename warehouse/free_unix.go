//go:build unix

package warehouse

import "golang.org/x/sys/unix"

// freeBytes is the space an unprivileged process may still write in dir's file system (-1:
// unknown, e.g. dir does not exist yet).
func freeBytes(dir string) int64 {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
