package apply

// SetEntriesPerShard makes inventories shard every n entries until the
// test ends (tests of this package do not run in parallel).
func SetEntriesPerShard(n int) (restore func()) {
	old := entriesPerShard
	entriesPerShard = n
	return func() { entriesPerShard = old }
}

// ParseEntry reads an inventory line.
var ParseEntry = parseEntry
