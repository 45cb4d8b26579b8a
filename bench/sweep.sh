#!/usr/bin/env bash
# bench/sweep.sh: the expiry sweep over a large directory, against the directory's own
# speed measured in the same run.
#
#   bench/sweep.sh            100,000 users, 1,000 of them due for a notice, 5 runs each
#   USERS=20000 DUE=200 RUNS=3 bench/sweep.sh
#   SPREAD_DAYS=120 bench/sweep.sh
#                             100,000 users whose passwords were changed evenly over the
#                             last 120 days (90-day policy: about a third due or expired,
#                             as on a first install over years of accounts)
#   LAYOUTS=split ...         one CPU layout (default: "split shared"; split = slapd on
#                             half the CPUs, the clients on the other half; shared = all
#                             processes on all CPUs, as on a one-box install)
#   KEEP=1 ...                keep the directory and the work folder afterwards
#
# Prints, each measured here and now and in each CPU layout:
#   - raw:    ldapsearch (paged, 500 per page, LDAPS, as the service account) fetching the
#             attributes the sweep reads, whole process, median of RUNS;
#   - sweep:  `lockbridge sweep` (whole process: start, store, directory stream, ledger),
#             dry run, first real run (from an empty store: queues the notices) and
#             steady state (all already queued), each the median of RUNS as a ratio to
#             raw, with its peak memory;
#   - mail:   the rate at which the daemon's outbox hands the queued notices to a local
#             SMTP server.
# Uses a release build (built if missing, or LOCKBRIDGE_BIN).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USERS=${USERS:-100000}
DUE=${DUE:-1000}
RUNS=${RUNS:-5}
PY=/usr/bin/python3
BIN=${LOCKBRIDGE_BIN:-$ROOT/target/release/lockbridge}
[[ -x $BIN ]] || (cd "$ROOT" && cargo build --release --bin lockbridge)
command -v /usr/bin/time >/dev/null || { echo "bench: needs GNU time (apt-get install time)" >&2; exit 1; }

WORK=$(mktemp -d -t lockbridge-bench-XXXXXX)
SINK_PID=""
DAEMON_PID=""
cleanup() {
	[[ -n $DAEMON_PID ]] && kill "$DAEMON_PID" 2>/dev/null || true
	[[ -n $SINK_PID ]] && kill "$SINK_PID" 2>/dev/null || true
	"$ROOT/scripts/lib/slapd-sandbox" stop "$WORK/ldap" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
# KEEP=1 leaves the directory, the sink and the work folder running for a closer look.
if [[ ${KEEP:-0} == 1 ]]; then
	trap 'echo "bench: kept $WORK (slapd: $ROOT/scripts/lib/slapd-sandbox stop $WORK/ldap)" >&2' EXIT
else
	trap cleanup EXIT
fi

SPREAD_DAYS=${SPREAD_DAYS:-0}
if ((SPREAD_DAYS > 0)); then
	echo "bench: building a directory of $USERS users, passwords changed evenly over $SPREAD_DAYS days" >&2
	$PY - "$USERS" "$SPREAD_DAYS" spread 0 >"$WORK/due.ldif"
	GENERATED=0
else
	echo "bench: building a directory of $USERS users plus $DUE whose passwords are 85 days old" >&2
	$PY - "$DUE" 85 due 85 >"$WORK/due.ldif"
	GENERATED=$USERS
fi <<'PYEOF'
import sys
# COUNT users named PREFIXnnnnnn whose passwords changed DAYS/COUNT apart back to DAYS
# days ago, or all FIXED days ago when FIXED > 0.
count, days, prefix, fixed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
for i in range(count):
    uid = "%s%06d" % (prefix, i)
    age = fixed if fixed > 0 else (i * days) // count
    print(f"dn: uid={uid},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: {uid}\n"
          f"cn: User {i}\nsn: User\nmail: {uid}@example.org\nuserPassword: @SAMPLE_PASSWORD_HASH@\n"
          f"pwdChangedTime: @DAYS_AGO:{age}@\n")
PYEOF
"$ROOT/scripts/lib/slapd-sandbox" start "$WORK/ldap" --users "$GENERATED" --ldif "$WORK/due.ldif" >/dev/null
# shellcheck disable=SC1091
source "$WORK/ldap/sandbox.env"

mkdir -p "$WORK/mail"
$PY "$ROOT/scripts/lib/mail-sink.py" --dir "$WORK/mail" 2>"$WORK/mail.log" &
SINK_PID=$!
for _ in $(seq 100); do [[ -s $WORK/mail/port ]] && break; sleep 0.1; done
MAIL_PORT=$(<"$WORK/mail/port")
HTTP_PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
head -c32 /dev/urandom | base64 >"$WORK/master-key"
cat >"$WORK/lockbridge.toml" <<TOML
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
admin_group_dns = ["$LDAP_ADMIN_GROUP_DN"]
[mail]
relay = "127.0.0.1"
port = $MAIL_PORT
security = "none"
[outbox]
max_bulk_per_minute = 0
max_bulk_per_day = 0
poll_interval_ms = 100
[expiry]
default_policy_dn = "cn=default,ou=policies,$LDAP_BASE_DN"
never_expires_policy_dn = "cn=never-expires,ou=policies,$LDAP_BASE_DN"
[sweep]
admin_recipients = ["admins@example.org"]
page_size = 500
TOML

RAW=(env "LDAPTLS_CACERT=$LDAP_CA_FILE" ldapsearch -LLL -H "$LDAPS_URL" -x -D "$LDAP_SERVICE_DN"
	-y "$LDAP_SERVICE_PASSWORD_FILE" -b "$LDAP_USERS_BASE" -E pr=500/noprompt
	'(objectClass=inetOrgPerson)' uid cn displayName mail entryUUID pwdChangedTime
	pwdPolicySubentry pwdReset pwdAccountLockedTime createTimestamp)
# Whole-process wall seconds and peak resident KB of "$@".
measure() {
	local start end
	start=$(date +%s.%N)
	/usr/bin/time -f '%M' -o "$WORK/rss" "$@" >"$WORK/out" 2>"$WORK/err" || {
		echo "bench: command failed: $*" >&2
		cat "$WORK/err" >&2
		exit 1
	}
	end=$(date +%s.%N)
	echo "$(calc "$end - $start") $(<"$WORK/rss")"
}
calc() { awk "BEGIN { print $1 }"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

SWEEP=("$BIN" sweep --config "$WORK/lockbridge.toml")
range() { printf '%s\n' "$@" | cut -d' ' -f1 | sort -n | awk 'NR==1 {a=$1} {b=$1} END {printf "%.2f-%.2f s", a, b}'; }
med() { printf '%s\n' "$@" | cut -d' ' -f1 | median; }
peak() { printf '%s\n' "$@" | cut -d' ' -f2 | sort -n | tail -1; }

# CPU layouts: "split" pins slapd to the first half of the CPUs and ldapsearch and
# lockbridge to the other half (the directory on its own machine); "shared" lets every
# process use every CPU (a one-box install).
SLAPD_PID=$(<"$SLAPD_PID_FILE")
read -r ALL_CPUS DIRECTORY_CPUS CLIENT_CPUS < <($PY -c '
import os
cpus = sorted(os.sched_getaffinity(0))
half = len(cpus) // 2
print(",".join(map(str, cpus)), ",".join(map(str, cpus[:half])) or "-", ",".join(map(str, cpus[half:])))')
LAYOUTS=${LAYOUTS:-split shared}
if [[ $DIRECTORY_CPUS == - ]]; then
	echo "bench: one CPU only: measuring the shared layout alone" >&2
	LAYOUTS=shared
fi
declare -A REPORT
NOTICES=""
"${RAW[@]}" >/dev/null # warm the directory's caches
for layout in $LAYOUTS; do
	ON=()
	if [[ $layout == split ]]; then
		taskset -a -p -c "$DIRECTORY_CPUS" "$SLAPD_PID" >/dev/null
		ON=(taskset -c "$CLIENT_CPUS")
	else
		taskset -a -p -c "$ALL_CPUS" "$SLAPD_PID" >/dev/null
	fi
	echo "bench: layout $layout" >&2
	declare -a RAWT=() DRY=() FIRST=() STEADY=()
	for _ in $(seq "$RUNS"); do
		RAWT+=("$(measure "${ON[@]}" "${RAW[@]}")")
		DRY+=("$(measure "${ON[@]}" "${SWEEP[@]}" --dry-run)")
	done
	# Each first sweep starts from an empty store: nothing queued, nothing in the ledger.
	for _ in $(seq "$RUNS"); do
		rm -rf "$WORK/state"
		FIRST+=("$(measure "${ON[@]}" "${SWEEP[@]}")")
		queued=$(awk '/^notices queued/ {print $3}' "$WORK/out")
		if [[ -n $NOTICES && $queued != "$NOTICES" ]]; then
			echo "bench: first sweeps queued $NOTICES, then $queued notices" >&2
			exit 1
		fi
		NOTICES=$queued
	done
	if ((SPREAD_DAYS == 0)) && [[ $NOTICES != "$DUE" ]]; then
		echo "bench: first sweep did not queue $DUE notices:" >&2
		cat "$WORK/out" >&2
		exit 1
	fi
	cp "$WORK/out" "$WORK/first.out"
	for _ in $(seq "$RUNS"); do STEADY+=("$(measure "${ON[@]}" "${SWEEP[@]}")"); done
	raw_s=$(med "${RAWT[@]}")
	REPORT[$layout]=$(
		printf '  %-34s %8.2f s  (runs %s)\n' "raw ldapsearch (paged, LDAPS)" "$raw_s" "$(range "${RAWT[@]}")"
		for kind in DRY FIRST STEADY; do
			declare -n runs=$kind
			case $kind in
			DRY) label="sweep --dry-run" ;;
			FIRST) label="first sweep (queues $NOTICES)" ;;
			STEADY) label="steady-state sweep" ;;
			esac
			s=$(med "${runs[@]}")
			printf '  %-34s %8.2f s  %5.2fx raw  peak %4d MB  (runs %s)\n' "$label" "$s" \
				"$(calc "$s / $raw_s")" "$(($(peak "${runs[@]}") / 1024))" "$(range "${runs[@]}")"
			unset -n runs
		done
	)
done
taskset -a -p -c "$ALL_CPUS" "$SLAPD_PID" >/dev/null

# Delivery: the daemon hands the queued notices (and the digests) to the SMTP server.
# The store holds the last first sweep's notices and digest and one digest per steady run.
QUEUED=$((NOTICES + RUNS + 1))
"$BIN" serve --config "$WORK/lockbridge.toml" 2>"$WORK/daemon.log" &
DAEMON_PID=$!
while (($(find "$WORK/mail/messages" -name '*.eml' 2>/dev/null | wc -l) < QUEUED)); do
	sleep 0.1
	kill -0 "$DAEMON_PID" 2>/dev/null || { echo "bench: daemon died" >&2; cat "$WORK/daemon.log" >&2; exit 1; }
done
# From the first message stored to the last (the daemon's start left out).
span() { find "$1" -name '*.eml' -printf '%T@\n' | sort -n | awk 'NR==1 {a=$1} {b=$1} END {print b-a}'; }
mail_s=$(span "$WORK/mail/messages")

if ((SPREAD_DAYS > 0)); then
	SHAPE="passwords changed evenly over $SPREAD_DAYS days"
	TOTAL=$((USERS + 5))
else
	SHAPE="$DUE due"
	TOTAL=$((USERS + DUE + 5))
fi
# The same messages again, from a plain SMTP client (Python's smtplib over one
# connection) to a fresh sink: what the sink itself can take.
mkdir -p "$WORK/mail2"
$PY "$ROOT/scripts/lib/mail-sink.py" --dir "$WORK/mail2" 2>"$WORK/mail2.log" &
SINK2_PID=$!
for _ in $(seq 100); do [[ -s $WORK/mail2/port ]] && break; sleep 0.1; done
$PY - "$WORK/mail/messages" "$(<"$WORK/mail2/port")" <<'PYEOF'
import glob, smtplib, sys
messages = []
for path in sorted(glob.glob(sys.argv[1] + "/*.eml")):
    data = open(path, "rb").read()
    eol = b"\r\n" if b"\r\n" in data else b"\n"
    sender, recipients, body = data.split(eol, 2)
    messages.append((sender.split(b": ", 1)[1].decode(), recipients.split(b": ", 1)[1].decode().split(", "), body))
with smtplib.SMTP("127.0.0.1", int(sys.argv[2])) as client:
    for sender, recipients, body in messages:
        client.sendmail(sender, recipients, body)
PYEOF
plain_s=$(span "$WORK/mail2/messages")
kill "$SINK2_PID" 2>/dev/null || true

printf '\nsweep over %d users (%s), median of %d runs each, whole processes\n' "$TOTAL" "$SHAPE" "$RUNS"
for layout in $LAYOUTS; do
	case $layout in
	split) printf 'layout split: slapd on CPUs %s, ldapsearch and lockbridge on CPUs %s\n' "$DIRECTORY_CPUS" "$CLIENT_CPUS" ;;
	shared) printf 'layout shared: every process on CPUs %s\n' "$ALL_CPUS" ;;
	esac
	printf '%s\n' "${REPORT[$layout]}"
done
printf '  %-34s %8.0f messages/s (%d in %.1f s, first to last)\n' "outbox to SMTP" "$(calc "($QUEUED - 1) / $mail_s")" "$QUEUED" "$mail_s"
printf '  %-34s %8.0f messages/s (same messages, one connection)  outbox %.2fx plain\n' "plain SMTP client (smtplib)" "$(calc "($QUEUED - 1) / $plain_s")" "$(calc "$plain_s / $mail_s")"
printf '\nfirst sweep'"'"'s summary:\n'
sed -n '/^accounts scanned/,/^$/p' "$WORK/first.out" | sed 's/^/  /' 
