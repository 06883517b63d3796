# bench/lib.sh — what the benchmark scripts share; source it.

# machine prints the machine and date every result is recorded with.
machine() {
	echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
	echo "date:    $(date -u +%Y-%m-%d)"
}

# measure prints the median of $runs wall-clock runs of a command, in
# seconds; the command's output is discarded and it must succeed.
measure() {
	local times=()
	for _ in $(seq "$runs"); do
		local start end
		start=$(date +%s.%N)
		"$@" >/dev/null 2>&1
		end=$(date +%s.%N)
		times+=("$(echo "$end - $start" | bc)")
	done
	printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p"
}
