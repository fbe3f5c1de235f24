# Debian packages some tests need (a real single-node SLURM). Installed once; skipped when present
# or when not root (the SLURM tests then skip with a message saying why).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
        echo "[crrxr] installing Debian packages: slurmctld slurmd slurm-client munge"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
    fi
fi
