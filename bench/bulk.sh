#!/usr/bin/env bash
# bench/bulk.sh: a bulk password reset of every user, against the directory's own speed
# at Password Modify measured in the same run.
#
#   bench/bulk.sh                      10,000 users, 5 rounds, split then shared layout
#   USERS=2000 RUNS=1 bench/bulk.sh
#   LAYOUTS=shared ...                 one CPU layout (split: slapd on half the CPUs,
#                                      lockbridge and the load generator on the other)
#   SERVER_HASHES_CLEARTEXT=false ...  Password Modify + a second write per reset
#                                      (default true, as in the demo: one write)
#   KEEP=1 ...                         keep the work folder (logs) afterwards
#
# Each round, in each layout:
#   - raw:  bench/scimload ldap-passmod, 8 connections bound as the service account
#           doing RFC 3062 Password Modify (ppolicy control) on the same users for
#           DURATION seconds; the time 10,000 of them take is USERS / rate;
#   - job:  POST /api/v1/password-resets {"all": true, "report": true} as a global-admin
#           token (generated passwords, must change at next sign-in), timed from the
#           request to the job's end as the API reports it (listing the users, sealing
#           and storing each password first, both directory writes, the audit record,
#           the outcome);
# and prints job / raw (target <= 1.3): the median of the rounds' own ratios, each round
# pairing one job with one raw run in alternating order, with the medians of both figures.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USERS=${USERS:-10000}
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
LAYOUTS=${LAYOUTS:-split shared}
PY=/usr/bin/python3
log() { echo "bench: $*" >&2; }
die() {
	log "$*"
	exit 1
}
command -v taskset >/dev/null || die "needs taskset (util-linux)"
command -v curl >/dev/null || die "needs curl"

LOAD_TARGET=$ROOT/bench/scimload/target
log "building the load generator and lockbridge (release)"
cargo build --release --quiet --manifest-path "$ROOT/bench/scimload/Cargo.toml" --target-dir "$LOAD_TARGET"
LOAD=$LOAD_TARGET/release/scimload
BIN=${LOCKBRIDGE_BIN:-}
if [[ -z $BIN ]]; then
	(cd "$ROOT" && cargo build --release --quiet --bin lockbridge)
	BIN=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
		"$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/lockbridge
fi

WORK=$(mktemp -d -t lockbridge-bulk-bench-XXXXXX)
DAEMON_PID=""
cleanup() {
	[[ -n $DAEMON_PID ]] && kill "$DAEMON_PID" 2>/dev/null || true
	"$ROOT/scripts/lib/slapd-sandbox" stop "$WORK/ldap" >/dev/null 2>&1 || true
	if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

log "starting a directory of $USERS users"
"$ROOT/scripts/lib/slapd-sandbox" start "$WORK/ldap" --users "$USERS" --watch-pid $$ >/dev/null
# shellcheck disable=SC1091
source "$WORK/ldap/sandbox.env"
SLAPD_PID=$(<"$SLAPD_PID_FILE")
sync
read -r ALL_CPUS DIRECTORY_CPUS CLIENT_CPUS < <($PY -c '
import os
cpus = sorted(os.sched_getaffinity(0))
half = len(cpus) // 2
print(",".join(map(str, cpus)), ",".join(map(str, cpus[:half])) or "-", ",".join(map(str, cpus[half:])))')
[[ $DIRECTORY_CPUS != - ]] || LAYOUTS=shared

HTTP_PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$HTTP_PORT
(umask 077 && head -c32 /dev/urandom | base64 >"$WORK/master-key")
CONFIG=$WORK/lockbridge.toml
cat >"$CONFIG" <<TOML
# Written by bench/bulk.sh.
[server]
listen = "127.0.0.1:$HTTP_PORT"
state_dir = "$WORK/state"
log_level = "warn"
rate_limit_per_second = 0
[security]
master_key_file = "$WORK/master-key"
[directory]
url = "$LDAPS_URL"
ca_file = "$LDAP_CA_FILE"
bind_dn = "$LDAP_SERVICE_DN"
bind_password_file = "$LDAP_SERVICE_PASSWORD_FILE"
users_base = "$LDAP_USERS_BASE"
groups_base = "$LDAP_GROUPS_BASE"
admin_group_dns = ["$LDAP_ADMIN_GROUP_DN"]
# As in the demo: the sandbox's ppolicy hashes clear-text passwords, so a reset that
# requires a change is one write (SERVER_HASHES_CLEARTEXT=false measures the two-write path).
server_hashes_cleartext = ${SERVER_HASHES_CLEARTEXT:-true}
[mail]
# Nothing is mailed: the passwords go to the job's report.
relay = "127.0.0.1"
port = 9
security = "none"
TOML
TOKEN=$("$BIN" token create --config "$CONFIG" --name bench --role global-admin)

start_daemon() {
	[[ -z $DAEMON_PID ]] || { kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; }
	"$@" "$BIN" serve --config "$CONFIG" </dev/null >>"$WORK/daemon.log" 2>&1 &
	DAEMON_PID=$!
	for _ in $(seq 200); do
		[[ $(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz" || true) == 200 ]] && return
		sleep 0.1
	done
	tail -n 20 "$WORK/daemon.log" >&2
	die "lockbridge did not start"
}

# job_seconds: runs one bulk reset of everyone, prints its seconds (request to end).
job_seconds() {
	local started id status
	started=$(date +%s.%N)
	id=$(curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
		-d '{"all": true, "mode": "auto", "report": true}' "$URL/api/v1/password-resets" |
		$PY -c 'import json, sys; print(json.load(sys.stdin)["id"])')
	log "  the job was created (accounts listed and stored) in $(calc "$(date +%s.%N) - $started") s"
	# Polled gently (the poll is not part of the work); the end is the job's own
	# finishedAt, so the polling interval does not round the figure.
	while :; do
		status=$(curl -sf -H "Authorization: Bearer $TOKEN" "$URL/api/v1/jobs/$id")
		if [[ $(echo "$status" | $PY -c 'import json, sys; print(json.load(sys.stdin)["status"])') != running ]]; then
			break
		fi
		sleep 0.25
	done
	local done_ refused failed
	read -r done_ refused failed < <(echo "$status" | $PY -c 'import json, sys; j = json.load(sys.stdin); print(j["done"], j["refused"], j["failed"])')
	((refused == 0 && failed == 0)) || die "job $id: $done_ done, $refused refused, $failed failed"
	# Take (and so erase) the report, as an administrator would.
	curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "$URL/api/v1/jobs/$id/report"
	local finished
	finished=$(echo "$status" | $PY -c 'import datetime, json, sys; print(datetime.datetime.fromisoformat(json.load(sys.stdin)["finishedAt"].replace("Z", "+00:00")).timestamp())')
	calc "$finished - $started"
}

raw_seconds() {
	local line rate
	line=$("$@" "$LOAD" --mode ldap-passmod --clients 8 --users "$USERS" --duration "$DURATION" --warmup 1 \
		--ldap-url "$LDAPS_URL" --ca-file "$LDAP_CA_FILE" --bind-dn "$LDAP_SERVICE_DN" \
		--bind-password-file "$LDAP_SERVICE_PASSWORD_FILE" --users-base "$LDAP_USERS_BASE")
	rate=$(echo "$line" | sed -n 's/.*ops_per_sec=\([0-9.]*\).*/\1/p')
	calc "$USERS / $rate"
}

calc() { awk "BEGIN { print $1 }"; }
# cpu_seconds PID: user + system CPU time the process (all its threads) has used so far.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
declare -A REPORT
for layout in $LAYOUTS; do
	ON=()
	if [[ $layout == split ]]; then
		taskset -a -p -c "$DIRECTORY_CPUS" "$SLAPD_PID" >/dev/null
		ON=(taskset -c "$CLIENT_CPUS")
	else
		taskset -a -p -c "$ALL_CPUS" "$SLAPD_PID" >/dev/null
	fi
	start_daemon "${ON[@]}"
	declare -a RAW=() JOB=() RATIO=() LB_CPU=() SLAPD_CPU=() RAW_SLAPD_CPU=()
	for round in $(seq "$RUNS"); do
		# Paired: each round's ratio is of two runs side by side, in alternating order, so
		# the disk's drift (slapd syncs every write) cancels out of the ratio.
		# CPU used meanwhile (the raw run's rate comes from a timed window; its CPU is
		# for all its operations, warm-up included, so it is given per operation below).
		raw_and_cpu() {
			local before
			before=$(cpu_seconds "$SLAPD_PID")
			raw_now=$(raw_seconds "${ON[@]}")
			# Per operation: the run did about rate x (DURATION + 1 s of warm-up) of them.
			RAW_SLAPD_CPU+=("$(calc "($(cpu_seconds "$SLAPD_PID") - $before) * 1000 / (($USERS / $raw_now) * ($DURATION + 1))")")
		}
		job_and_cpu() {
			local lb slapd
			lb=$(cpu_seconds "$DAEMON_PID") slapd=$(cpu_seconds "$SLAPD_PID")
			job_now=$(job_seconds)
			LB_CPU+=("$(calc "$(cpu_seconds "$DAEMON_PID") - $lb")")
			SLAPD_CPU+=("$(calc "$(cpu_seconds "$SLAPD_PID") - $slapd")")
		}
		if ((round % 2)); then
			raw_and_cpu
			job_and_cpu
		else
			job_and_cpu
			raw_and_cpu
		fi
		RAW+=("$raw_now")
		JOB+=("$job_now")
		RATIO+=("$(calc "$job_now / $raw_now")")
		log "$layout round $round: raw $raw_now s, job $job_now s, job / raw ${RATIO[-1]}"
	done
	raw=$(printf '%s\n' "${RAW[@]}" | median)
	job=$(printf '%s\n' "${JOB[@]}" | median)
	ratio=$(printf '%s\n' "${RATIO[@]}" | median)
	spread=$(printf '%s\n' "${RATIO[@]}" | sort -n | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%.2f-%.2f", lo, hi}')
	lb_cpu=$(printf '%s\n' "${LB_CPU[@]}" | median)
	slapd_cpu=$(printf '%s\n' "${SLAPD_CPU[@]}" | median)
	raw_slapd=$(printf '%s\n' "${RAW_SLAPD_CPU[@]}" | median)
	REPORT[$layout]=$(printf '  %-8s raw Password Modify %7.2f s   bulk reset job %7.2f s   job / raw %5.2f (rounds %s)\n           CPU per account: lockbridge %.3f ms and slapd %.3f ms in the job; slapd %.3f ms per raw Password Modify' \
		"$layout" "$raw" "$job" "$ratio" "$spread" \
		"$(calc "$lb_cpu * 1000 / $USERS")" "$(calc "$slapd_cpu * 1000 / $USERS")" "$raw_slapd")
done

printf '\nbulk reset of %d users (generated passwords, must change, report), medians of %d rounds;\n' "$USERS" "$RUNS"
printf 'job / raw is the median of the rounds'"'"' own ratios (each round pairs one job with one raw run)\n'
for layout in $LAYOUTS; do printf '%s\n' "${REPORT[$layout]}"; done
printf 'CPUs: %s (split: slapd on %s, lockbridge and scimload on %s)\n' "$ALL_CPUS" "$DIRECTORY_CPUS" "$CLIENT_CPUS"
