//go:build !unix

package warehouse

func freeBytes(string) int64 { return -1 }
