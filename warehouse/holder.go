package warehouse

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A writer leaves a note beside the warehouse saying who it is, so that a process kept out of
// the file (DuckDB lets one process in while another writes) can say who holds it.

// Holder is the process that has the warehouse open for writing.
type Holder struct {
	PID     int       `json:"pid"`
	Command string    `json:"command"`
	Since   time.Time `json:"since"`
}

func (h Holder) String() string {
	if h.Command == "" {
		return fmt.Sprintf("pid %d", h.PID)
	}
	s := fmt.Sprintf("pid %d (%s", h.PID, h.Command)
	if !h.Since.IsZero() {
		s += ", since " + h.Since.Local().Format("2006-01-02 15:04:05")
	}
	return s + ")"
}

func holderPath(warehouse string) string { return warehouse + ".holder" }

// writeHolder records this process as the warehouse's writer.
func writeHolder(warehouse string) error {
	cmd := strings.Join(os.Args, " ")
	if len(cmd) > 200 {
		cmd = cmd[:200] + " …"
	}
	b, err := json.Marshal(Holder{PID: os.Getpid(), Command: cmd, Since: time.Now()})
	if err != nil {
		return err
	}
	return os.WriteFile(holderPath(warehouse), b, 0o600)
}

// removeHolder removes this process's note, and only its own.
func removeHolder(warehouse string) {
	if h, err := readHolder(warehouse); err == nil && h.PID == os.Getpid() {
		_ = os.Remove(holderPath(warehouse))
	}
}

func readHolder(warehouse string) (Holder, error) {
	var h Holder
	b, err := os.ReadFile(holderPath(warehouse))
	if err != nil {
		return h, err
	}
	return h, json.Unmarshal(b, &h)
}

// lockPID finds the process DuckDB names in its lock error ("... (PID 1234) ...").
var lockPID = regexp.MustCompile(`\(PID (\d+)\)`)

// holderOf says who holds the warehouse, from the writer's note when it is that process's, else
// from the pid DuckDB names and its command line.
func holderOf(warehouse string, lockErr error) Holder {
	var pid int
	if m := lockPID.FindStringSubmatch(lockErr.Error()); m != nil {
		pid, _ = strconv.Atoi(m[1])
	}
	if h, err := readHolder(warehouse); err == nil && (pid == 0 || h.PID == pid) && alive(h.PID) {
		return h
	}
	h := Holder{PID: pid}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		h.Command = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
	}
	return h
}

// alive tells whether process pid still runs. A process killed but not yet reaped by its parent
// (a zombie) still answers the signal; Linux's /proc says it is one.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses and may hold any byte.
	_, state, _ := strings.Cut(string(stat[bytes.LastIndexByte(stat, ')')+1:]), " ")
	return !strings.HasPrefix(state, "Z")
}

// InUseError says another process holds the warehouse, and who.
type InUseError struct {
	Path   string
	Holder Holder
	Waited time.Duration
}

func (e *InUseError) Error() string {
	msg := fmt.Sprintf("the warehouse %s is in use by %s", e.Path, e.Holder)
	if e.Waited > 0 {
		msg += fmt.Sprintf("; waited %s (warehouse.lock_wait)", e.Waited.Round(time.Second))
	}
	return msg
}

// Is makes errors.Is(err, ErrInUse) hold.
func (e *InUseError) Is(target error) bool { return target == ErrInUse }
