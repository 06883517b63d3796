// Package procfs reads what Linux's /proc says of a process: its resident
// memory, and whether it still runs. Elsewhere it knows nothing (0, false).
package procfs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Resident is the resident memory of process pid (0: this process), in
// bytes; 0 when unknown.
func Resident(pid int) int64 {
	path := "/proc/self/statm"
	if pid != 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/statm"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	fields := bytes.Fields(data)
	if len(fields) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(string(fields[1]), 10, 64)
	return pages * int64(os.Getpagesize())
}

// Running reports whether process pid exists and is not a zombie.
func Running(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	if i := bytes.LastIndex(data, []byte(") ")); i >= 0 && len(data) > i+2 {
		return data[i+2] != 'Z'
	}
	return true
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// CPU is the user and system CPU time process pid has used; 0 when
// unknown.
func CPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndex(data, []byte(") "))
	if i < 0 {
		return 0
	}
	// After the command: state (field 3) … utime (14), stime (15).
	fields := bytes.Fields(data[i+2:])
	if len(fields) < 13 {
		return 0
	}
	user, _ := strconv.ParseInt(string(fields[11]), 10, 64)
	sys, _ := strconv.ParseInt(string(fields[12]), 10, 64)
	return time.Duration(user+sys) * time.Second / clockTicks
}
