//go:build !linux

package publish

import (
	"os"

	"github.com/google/uuid"
)

// exchange swaps two paths. Without Linux's renameat2 it takes two renames, so a reader may
// briefly find nothing at b (never a mix).
func exchange(a, b string) error {
	old := b + ".old-" + uuid.NewString()[:8]
	if err := os.Rename(b, old); err != nil {
		return err
	}
	if err := os.Rename(a, b); err != nil {
		return err
	}
	return os.Rename(old, a)
}
