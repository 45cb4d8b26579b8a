#!/usr/bin/env bash
# bench/scim.sh: SCIM reads and password pushes, against the directory's own speed
# measured in the same run by the same load generator.
#
#   bench/scim.sh                          10,000 and 100,000 users, each in the split and
#                                          the shared CPU layout (below), then a summary
#                                          of the four side by side
#   SIZES=100000 LAYOUTS=split bench/scim.sh   one size, one layout
#   USERS=20000 ROUNDS=2 DURATION=5 bench/scim.sh   one run of that size, CPU_LAYOUT's layout
#   RAW_ONLY=1 bench/scim.sh               the raw LDAP figures only (no daemon)
#
# Each round measures, after WARMUP seconds of the same load (the order is reversed every
# other round, A B B A, so drift hits both sides alike over an even number of rounds):
#   raw search   bench/scimload ldap-search: GET_CLIENTS (32) LDAPS connections bound as
#                the service account, (&(objectClass=inetOrgPerson)(uid=userNNNNNN)),
#                random users, the attributes a SCIM read needs (ATTRS)
#   SCIM get     GET /scim/v2/Users?filter=userName eq "userNNNNNN", GET_CLIENTS keep-alive
#                HTTP connections; 200 and totalResults 1
#   raw passmod  RFC 3062 Password Modify with the ppolicy control, PATCH_CLIENTS (8)
#                connections, each client on its own users, fresh random passwords
#   SCIM patch   PATCH /scim/v2/Users/{id} replacing password, PATCH_CLIENTS connections
#                (ids fetched first with filter GETs, not timed)
# and prints ops/s and p50/p99 (medians of the rounds), the SCIM/raw ratio (median of the
# per-round ratios) against the targets (get >= 0.7, patch >= 0.8), the CPU each operation
# cost slapd, lockbridge and the load generator, and the daemon's peak memory.
#
# CPU_LAYOUT says how the processes share the machine's CPUs:
#   split (default)  slapd runs on the first half of the CPUs, in every run; the clients
#                    (the load generator, and lockbridge in the SCIM runs) on the other
#                    half. The directory has the same CPUs to itself in the raw and the
#                    SCIM runs, as on a deployment where it has its own server, so the
#                    ratio is lockbridge's throughput against the directory's.
#   shared           every process may run on every CPU: in the SCIM runs lockbridge
#                    takes CPU time from the directory, so the ratio also counts
#                    lockbridge's CPU cost against the directory's throughput.
#
# Before the rounds, WRITE_WARMUP (20) seconds of raw Password Modify, not measured: a
# freshly imported directory takes its first writes faster than later ones.
#
# Targets (issue "SCIM: keep everything Entra ID and Okta send ..."): split GET >= 0.7 and
# PATCH >= 0.9; shared GET >= 0.6 and PATCH >= 0.7; lockbridge's CPU per password PATCH
# <= 0.3 ms.
#
# Environment: SIZES LAYOUTS USERS ROUNDS DURATION WARMUP WRITE_WARMUP GET_CLIENTS
# PATCH_CLIENTS POOL_SIZE ATTRS CPU_LAYOUT, SPLIT_CPUS ("directory clients", e.g. "1 0";
# default: the first half of the CPUs for slapd), RAW_ONLY=1, LOCKBRIDGE_BIN=path (skips the
# release build), KEEP=1 (keeps the work folder with the logs), SLAPD_SANDBOX_DEBUG (slapd
# log level, default 0 here: no per-op log).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ---- several sizes and layouts: one run each, then a summary -------------------------------
# Without USERS or CPU_LAYOUT given, every size in SIZES is measured in every layout in
# LAYOUTS, each by a run of this script (its own directory and daemon), and the ratios
# are printed side by side at the end.
if [[ -z ${BENCH_ONE:-} && -z ${USERS:-} && -z ${CPU_LAYOUT:-} ]]; then
	SIZES=${SIZES:-10000 100000}
	LAYOUTS=${LAYOUTS:-split shared}
	SUMMARY=$(mktemp -t lockbridge-scim-bench-summary-XXXXXX)
	trap 'rm -f "$SUMMARY"' EXIT
	if [[ -z ${LOCKBRIDGE_BIN:-} && ${RAW_ONLY:-0} != 1 ]]; then
		printf 'bench: %s\n' "building lockbridge (cargo build --release)" >&2
		(cd "$ROOT" && cargo build --release --quiet --bin lockbridge) || exit 1
		LOCKBRIDGE_BIN=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
			/usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/lockbridge
		export LOCKBRIDGE_BIN
	fi
	for size in $SIZES; do
		for layout in $LAYOUTS; do
			BENCH_ONE=1 USERS=$size CPU_LAYOUT=$layout BENCH_SUMMARY=$SUMMARY "$0" || exit $?
		done
	done
	/usr/bin/python3 - "$SUMMARY" <<'PYEOF'
import sys
rows = [dict(kv.split("=", 1) for kv in line.split()) for line in open(sys.argv[1]) if line.strip()]
targets = {"split": (0.7, 0.9), "shared": (0.6, 0.7)}
print()
print("Summary (medians of the rounds; targets: split GET >= 0.7, PATCH >= 0.9; shared GET >= 0.6,")
print("PATCH >= 0.7; lockbridge CPU per PATCH <= 0.3 ms)")
print(f"  {'users':>8} {'layout':<7} {'GET ratio':>10} {'PATCH ratio':>12} {'CPU/GET ms':>11} {'CPU/PATCH ms':>13}")
for r in rows:
    get_t, patch_t = targets.get(r["layout"], (0.7, 0.8))
    def mark(v, t, above=True):
        if v == "-":
            return "-"
        ok = float(v) >= t if above else float(v) <= t
        return f"{float(v):.2f}{'' if ok else ' !'}"
    print(f"  {int(r['users']):>8,} {r['layout']:<7} {mark(r['get'], get_t):>10} {mark(r['patch'], patch_t):>12}"
          f" {r['cpu_get']:>11} {mark(r['cpu_patch'], 0.3, above=False) if r['cpu_patch'] != '-' else '-':>13}")
print("(! marks a figure that misses its target)")
PYEOF
	exit 0
fi
USERS=${USERS:-100000}
ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
WRITE_WARMUP=${WRITE_WARMUP:-20}
GET_CLIENTS=${GET_CLIENTS:-32}
PATCH_CLIENTS=${PATCH_CLIENTS:-8}
POOL_SIZE=${POOL_SIZE:-32}
RAW_ONLY=${RAW_ONLY:-0}
KEEP=${KEEP:-0}
CPU_LAYOUT=${CPU_LAYOUT:-split}
# The attributes lockbridge asks for when it reads a user (UserMapping::read_attributes
# with lockbridge's schema loaded, as in the demo), so both sides make the same request.
ATTRS=${ATTRS:-objectClass,uid,givenName,sn,cn,lockbridgeMiddleName,lockbridgeHonorificPrefix,lockbridgeHonorificSuffix,displayName,lockbridgeNickName,lockbridgeProfileUrl,title,lockbridgeUserType,preferredLanguage,lockbridgeLocale,lockbridgeTimezone,mail,telephoneNumber,mobile,facsimileTelephoneNumber,homePhone,pager,postalAddress,street,l,st,postalCode,lockbridgeCountry,employeeNumber,lockbridgeCostCenter,departmentNumber,o,lockbridgeDivision,manager,lockbridgeEmail,lockbridgePhoneNumber,lockbridgeIm,lockbridgePhoto,lockbridgeEntitlement,lockbridgeRole,lockbridgeX509Certificate,lockbridgePrimary,lockbridgeAddress,lockbridgeExternalId,memberOf,entryUUID,entryCSN,createTimestamp,modifyTimestamp,pwdReset,pwdChangedTime,pwdAccountLockedTime,pwdPolicySubentry}
export SLAPD_SANDBOX_DEBUG=${SLAPD_SANDBOX_DEBUG:-0}
PY=/usr/bin/python3
READY_TIMEOUT_SECS=60

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	printf 'bench: error: %s\n' "$*" >&2
	exit 1
}

for v in USERS ROUNDS DURATION GET_CLIENTS PATCH_CLIENTS POOL_SIZE; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a whole number of seconds (got '$WARMUP')"
[[ $WRITE_WARMUP =~ ^[0-9]+$ ]] || die "WRITE_WARMUP must be a whole number of seconds (got '$WRITE_WARMUP')"
((USERS >= GET_CLIENTS && USERS >= PATCH_CLIENTS)) || die "USERS must be at least the number of clients"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust first"
command -v curl >/dev/null 2>&1 || die "curl not found (scripts/lib/ensure-packages installs it)"

# ---- CPU layout ---------------------------------------------------------------------------
# DIRECTORY_CPUS / CLIENT_CPUS: taskset CPU lists; empty = no pinning.
DIRECTORY_CPUS=""
CLIENT_CPUS=""
case $CPU_LAYOUT in
split)
	command -v taskset >/dev/null 2>&1 || die "taskset not found (util-linux); CPU_LAYOUT=shared runs without it"
	if [[ -n ${SPLIT_CPUS:-} ]]; then
		# e.g. SPLIT_CPUS="1 0": slapd on CPU 1, the clients on CPU 0. The CPU that takes
		# the disk's interrupts charges their time to whatever runs there (see README).
		read -r DIRECTORY_CPUS CLIENT_CPUS <<<"$SPLIT_CPUS"
	else
	read -r DIRECTORY_CPUS CLIENT_CPUS < <("$PY" -c '
import os
cpus = sorted(os.sched_getaffinity(0))
half = len(cpus) // 2
print(",".join(map(str, cpus[:half])) or "-", ",".join(map(str, cpus[half:])))')
	fi
	if [[ $DIRECTORY_CPUS == - ]]; then
		log "only one CPU is available: CPU_LAYOUT=split needs two; running shared"
		CPU_LAYOUT=shared DIRECTORY_CPUS="" CLIENT_CPUS=""
	fi
	;;
shared) ;;
*) die "CPU_LAYOUT must be split or shared (got '$CPU_LAYOUT')" ;;
esac
# ON_CLIENT_CPUS: the command prefix that runs a client on the clients' CPUs (taskset execs
# the command, so a background job's $! is the client's own PID).
ON_CLIENT_CPUS=()
[[ -z $CLIENT_CPUS ]] || ON_CLIENT_CPUS=(taskset -c "$CLIENT_CPUS")

# ---- builds -------------------------------------------------------------------------------
LOAD_TARGET=$ROOT/bench/scimload/target
log "building the load generator (bench/scimload, release)"
cargo build --release --quiet --manifest-path "$ROOT/bench/scimload/Cargo.toml" \
	--target-dir "$LOAD_TARGET" || die "building bench/scimload failed"
LOAD=$LOAD_TARGET/release/scimload

BIN=""
if ((!RAW_ONLY)); then
	if [[ -n ${LOCKBRIDGE_BIN:-} ]]; then
		BIN=$LOCKBRIDGE_BIN
	else
		log "building lockbridge (cargo build --release)"
		(cd "$ROOT" && cargo build --release --quiet --bin lockbridge) ||
			die "cargo build --release failed (RAW_ONLY=1 measures the directory alone)"
		TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
			"$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
		BIN=$TARGET_DIR/release/lockbridge
	fi
	[[ -x $BIN ]] || die "$BIN is not an executable lockbridge binary"
fi

# ---- directory ----------------------------------------------------------------------------
WORK=$(mktemp -d -t lockbridge-scim-bench-XXXXXX)
DAEMON_PID=""
cleanup() {
	if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
		kill "$DAEMON_PID" 2>/dev/null || true
		wait "$DAEMON_PID" 2>/dev/null || true
	fi
	"$ROOT/scripts/lib/slapd-sandbox" stop "$WORK/ldap" >/dev/null 2>&1 || true
	if ((KEEP)); then
		log "kept $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting a directory of $USERS users"
"$ROOT/scripts/lib/slapd-sandbox" start "$WORK/ldap" --users "$USERS" --watch-pid $$ >/dev/null ||
	die "the sandbox directory did not start (scripts/lib/ensure-packages installs slapd)"
# shellcheck disable=SC1091
source "$WORK/ldap/sandbox.env"
SLAPD_PID=$(<"$SLAPD_PID_FILE")
if [[ -n $DIRECTORY_CPUS ]]; then
	# Every thread slapd has now; the ones it starts later inherit the affinity.
	taskset -a -p -c "$DIRECTORY_CPUS" "$SLAPD_PID" >/dev/null || die "could not pin slapd to CPUs $DIRECTORY_CPUS"
	log "CPU layout split: slapd on CPUs $DIRECTORY_CPUS, load generator and lockbridge on CPUs $CLIENT_CPUS"
else
	log "CPU layout shared: every process on every CPU"
fi
# The import leaves dirty pages behind; flushing them now keeps them out of the first
# write measurements (each directory write waits for its fsync).
sync
SLAPD_VERSION=$(/usr/sbin/slapd -VV 2>&1 | sed -n 's/.*slapd \([0-9][^ ]*\).*/\1/p' | head -n1)

# ---- daemon -------------------------------------------------------------------------------
URL=""
if ((!RAW_ONLY)); then
	HTTP_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	URL=http://127.0.0.1:$HTTP_PORT
	(umask 077 && head -c32 /dev/urandom | base64 >"$WORK/master-key")
	CONFIG=$WORK/lockbridge.toml
	cat >"$CONFIG" <<TOML
# Written by bench/scim.sh; see config/lockbridge.example.toml for every key.
[server]
listen = "127.0.0.1:$HTTP_PORT"
public_url = "$URL"
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
pool_size = $POOL_SIZE
[mail]
# Nothing is mailed during the benchmark.
relay = "127.0.0.1"
port = 9
security = "none"
[expiry]
default_policy_dn = "cn=default,ou=policies,$LDAP_BASE_DN"
never_expires_policy_dn = "cn=never-expires,ou=policies,$LDAP_BASE_DN"
[sweep]
admin_recipients = ["admins@example.org"]
# [scim] keeps its defaults: no rate, at most 128 requests of one token under way
# (GET_CLIENTS and PATCH_CLIENTS stay below it).
TOML

	log "creating a SCIM token"
	if ! TOKEN=$("$BIN" token create --config "$CONFIG" --name bench --role scim 2>"$WORK/token.err"); then
		sed 's/^/  /' "$WORK/token.err" >&2
		die "'lockbridge token create --role scim' failed: this lockbridge has no SCIM support yet (the scim role comes with the SCIM endpoints). RAW_ONLY=1 bench/scim.sh measures the directory alone."
	fi
	[[ -n $TOKEN ]] || die "lockbridge token create printed no token"
	(umask 077 && printf '%s' "$TOKEN" >"$WORK/token" && printf 'Authorization: Bearer %s\n' "$TOKEN" >"$WORK/auth-header")

	log "starting lockbridge on $URL (directory pool of $POOL_SIZE)"
	"${ON_CLIENT_CPUS[@]}" "$BIN" serve --config "$CONFIG" </dev/null >"$WORK/daemon.log" 2>&1 &
	DAEMON_PID=$!
	deadline=$(($(date +%s) + READY_TIMEOUT_SECS))
	until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/readyz" || true) == 200 ]]; do
		kill -0 "$DAEMON_PID" 2>/dev/null || {
			tail -n 20 "$WORK/daemon.log" >&2
			die "lockbridge exited during start-up"
		}
		(($(date +%s) < deadline)) || {
			tail -n 20 "$WORK/daemon.log" >&2
			die "lockbridge was not ready within ${READY_TIMEOUT_SECS}s"
		}
		sleep 0.2
	done
	code=$(curl -s -o "$WORK/probe.json" -w '%{http_code}' --max-time 10 -H @"$WORK/auth-header" \
		"$URL/scim/v2/ServiceProviderConfig" || true)
	if [[ $code != 200 ]]; then
		head -c 300 "$WORK/probe.json" >&2 || true
		echo >&2
		die "GET $URL/scim/v2/ServiceProviderConfig answered ${code:-nothing}: the SCIM endpoints are not served (RAW_ONLY=1 measures the directory alone)"
	fi
fi

# ---- measurements -------------------------------------------------------------------------
RESULTS=$WORK/results.txt
: >"$RESULTS"
LDAP_ARGS=(--ldap-url "$LDAPS_URL" --ca-file "$LDAP_CA_FILE" --bind-dn "$LDAP_SERVICE_DN"
	--bind-password-file "$LDAP_SERVICE_PASSWORD_FILE" --users-base "$LDAP_USERS_BASE" --attrs "$ATTRS")
SCIM_ARGS=(--scim-url "$URL/scim/v2" --token-file "$WORK/token")
CPU_ARGS=(--cpu "slapd=$SLAPD_PID")
[[ -z $DAEMON_PID ]] || CPU_ARGS+=(--cpu "lockbridge=$DAEMON_PID")

# measure ROUND MODE CLIENTS ARGS...: one scimload run; its line goes to RESULTS.
measure() {
	local round=$1 mode=$2 clients=$3 line
	shift 3
	if ! line=$("${ON_CLIENT_CPUS[@]}" "$LOAD" --mode "$mode" --clients "$clients" --users "$USERS" \
		--duration "$DURATION" --warmup "$WARMUP" "${CPU_ARGS[@]}" "$@" 2>"$WORK/load.err"); then
		[[ -z $line ]] || echo "$line" >&2
		sed 's/^/  /' "$WORK/load.err" >&2
		die "scimload --mode $mode failed in round $round (KEEP=1 keeps the daemon and slapd logs)"
	fi
	log "round $round: $line"
	echo "round=$round $line" >>"$RESULTS"
}

# A freshly imported directory takes its first writes faster than later ones (every
# password written adds a pwdHistory value, and mdb's pages stop being packed), so the
# first measured write run would have an edge over the others: write for a while first.
if ((WRITE_WARMUP > 0)); then
	log "warming up writes: ${WRITE_WARMUP}s of raw Password Modify, not measured"
	"${ON_CLIENT_CPUS[@]}" "$LOAD" --mode ldap-passmod --clients "$PATCH_CLIENTS" --users "$USERS" \
		--duration "$WRITE_WARMUP" --warmup 0 "${LDAP_ARGS[@]}" >/dev/null 2>"$WORK/load.err" ||
		{
			sed 's/^/  /' "$WORK/load.err" >&2
			die "the write warm-up failed"
		}
fi

PER_ROUND=$((RAW_ONLY ? 2 : 4))
log "measuring: $ROUNDS rounds of $PER_ROUND runs, ${WARMUP}s warm-up + ${DURATION}s each"
for ((r = 1; r <= ROUNDS; r++)); do
	if ((RAW_ONLY)); then
		measure "$r" ldap-search "$GET_CLIENTS" "${LDAP_ARGS[@]}"
		measure "$r" ldap-passmod "$PATCH_CLIENTS" "${LDAP_ARGS[@]}"
	elif ((r % 2)); then
		measure "$r" ldap-search "$GET_CLIENTS" "${LDAP_ARGS[@]}"
		measure "$r" scim-get "$GET_CLIENTS" "${SCIM_ARGS[@]}"
		measure "$r" ldap-passmod "$PATCH_CLIENTS" "${LDAP_ARGS[@]}"
		measure "$r" scim-patch-password "$PATCH_CLIENTS" "${SCIM_ARGS[@]}"
	else
		measure "$r" scim-patch-password "$PATCH_CLIENTS" "${SCIM_ARGS[@]}"
		measure "$r" ldap-passmod "$PATCH_CLIENTS" "${LDAP_ARGS[@]}"
		measure "$r" scim-get "$GET_CLIENTS" "${SCIM_ARGS[@]}"
		measure "$r" ldap-search "$GET_CLIENTS" "${LDAP_ARGS[@]}"
	fi
done

PEAK_RSS_KB=""
if [[ -n $DAEMON_PID ]]; then
	PEAK_RSS_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$DAEMON_PID/status" 2>/dev/null || true)
fi

# ---- report -------------------------------------------------------------------------------
"$PY" - "$RESULTS" "$USERS" "$ROUNDS" "$DURATION" "$WARMUP" "$GET_CLIENTS" "$PATCH_CLIENTS" \
	"$POOL_SIZE" "${SLAPD_VERSION:-?}" "$(nproc)" "${PEAK_RSS_KB:-}" "$CPU_LAYOUT" \
	"$DIRECTORY_CPUS" "$CLIENT_CPUS" "${BENCH_SUMMARY:-}" <<'PYEOF'
import statistics, sys

(path, users, rounds, duration, warmup, get_clients, patch_clients, pool, slapd, cores,
 rss_kb, layout, directory_cpus, client_cpus, summary) = sys.argv[1:]
runs = {}  # mode -> {round: fields}
for line in open(path):
    f = dict(kv.split("=", 1) for kv in line.split())
    runs.setdefault(f["mode"], {})[int(f["round"])] = f

def med(mode, key):
    vals = [float(f[key]) for f in runs.get(mode, {}).values() if f.get(key, "NA") != "NA"]
    return statistics.median(vals) if vals else None

def fmt(v, spec):
    return format(v, spec) if v is not None else "-"

def row(label, mode):
    if mode not in runs:
        return
    print(f"  {label:<34}{fmt(med(mode, 'ops_per_sec'), ',.0f'):>9}{fmt(med(mode, 'p50_ms'), '.2f'):>9}"
          f"{fmt(med(mode, 'p99_ms'), '.2f'):>9}"
          + "".join(f"{fmt(med(mode, 'cpu_ms_per_op.' + p), '.3f'):>10}" for p in ("slapd", "lockbridge", "self")))

medians = {}

def ratio(label, raw, scim, target):
    if raw not in runs or scim not in runs:
        return
    pairs = [float(runs[scim][r]["ops_per_sec"]) / float(runs[raw][r]["ops_per_sec"])
             for r in runs[raw] if r in runs[scim]]
    m = statistics.median(pairs)
    medians[scim] = m
    verdict = "MEETS" if m >= target else "MISSES"
    print(f"  {label:<34}{m:>9.2f}   (rounds {min(pairs):.2f}-{max(pairs):.2f}; "
          f"target >= {target}: {verdict})")

total_users = int(users) + 5
print()
print(f"SCIM benchmark: {total_users:,} users (slapd {slapd}, mdb, LDAPS), {cores} CPUs")
if layout == "split":
    print(f"CPU layout split: slapd alone on CPUs {directory_cpus} in every run; the load generator "
          f"and lockbridge on CPUs {client_cpus}")
else:
    print("CPU layout shared: slapd, lockbridge and the load generator on every CPU")
print(f"{rounds} rounds, each run {warmup} s warm-up + {duration} s measured; medians of the rounds; "
      f"lockbridge directory pool {pool}")
print()
print(f"  {'':<34}{'ops/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'slapd':>10}{'daemon':>10}{'loadgen':>10}")
print(f"GET one user by userName, {get_clients} clients")
row("raw LDAP search", "ldap-search")
row('SCIM GET /Users?filter=userName eq', "scim-get")
targets = {"split": (0.7, 0.9), "shared": (0.6, 0.7)}.get(layout, (0.7, 0.8))
ratio("SCIM / raw", "ldap-search", "scim-get", targets[0])
print(f"Password change, {patch_clients} clients")
row("raw Password Modify (RFC 3062)", "ldap-passmod")
row("SCIM PATCH /Users/{id} password", "scim-patch-password")
ratio("SCIM / raw", "ldap-passmod", "scim-patch-password", targets[1])
print("(slapd, daemon, loadgen: CPU milliseconds each process spent per counted operation)")
if rss_kb:
    print(f"lockbridge peak RSS: {int(rss_kb) / 1024:.0f} MiB")
if summary:
    cpu = lambda mode: fmt(med(mode, "cpu_ms_per_op.lockbridge"), ".3f")
    with open(summary, "a") as out:
        out.write(f"users={total_users} layout={layout} get={fmt(medians.get('scim-get'), '.3f')} "
                  f"patch={fmt(medians.get('scim-patch-password'), '.3f')} "
                  f"cpu_get={cpu('scim-get')} cpu_patch={cpu('scim-patch-password')}\n")
PYEOF
