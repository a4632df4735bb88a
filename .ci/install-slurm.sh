#!/usr/bin/env bash
# Install a one-node SLURM (Debian's slurm-wlm) and munge for the test suite.
# Idempotent: if every needed binary is already on PATH, it does nothing.
# Must run as root (or with sudo available) on Debian/Ubuntu.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"   # the daemons live in /usr/sbin

need=(slurmctld slurmd sbatch srun squeue scontrol scancel sinfo munged munge unmunge)
missing=()
for b in "${need[@]}"; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-slurm: slurm-wlm and munge already installed ($(dpkg-query -W -f '${Version}' slurm-wlm 2>/dev/null || echo unknown))"
    exit 0
fi
echo "install-slurm: missing ${missing[*]}; installing slurm-wlm and munge"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-slurm: must run as root (or have sudo)" >&2; exit 1
    fi
fi

# slurm-wlm pulls slurmctld, slurmd and slurm-client; munge is the auth daemon.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge

for b in "${need[@]}"; do
    command -v "$b" >/dev/null 2>&1 || { echo "install-slurm: $b still missing after install" >&2; exit 1; }
done
# The Debian packages may try to start the system services with /etc/slurm/slurm.conf
# (which does not exist); the tests start their own daemons with a private config.
echo "install-slurm: installed slurm-wlm $(dpkg-query -W -f '${Version}' slurm-wlm)"
