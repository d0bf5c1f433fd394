#!/usr/bin/env bash
# Packs one Planetoid citation graph (Cora, CiteSeer) from its four text files into the single
# zstd file peernode ships: Sources/Models/Resources/<NAME>.planetoid.zst.
#
#   scripts/pack-planetoid.sh SRC_DIR NAME
#
# SRC_DIR holds features.txt, labels.txt, split.txt and edges.txt in the layout docs/datasets.md
# describes (one record per line, `\n` endings). The packed file is those four files in that
# order, each introduced by a line `file <name> <line count>`, after a first line
# `peernode-planetoid 1`; the loader checks every count. zstd compresses from a file, not a pipe,
# so the frame records its content size (the loader refuses frames without one).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 SRC_DIR NAME" >&2; exit 2; }
SRC=$1 NAME=$2
cd "$(dirname "$0")/.."
OUT="Sources/Models/Resources/$NAME.planetoid.zst"
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
echo "peernode-planetoid 1" >"$TMP"
for f in features.txt labels.txt split.txt edges.txt; do
    [ -f "$SRC/$f" ] || { echo "missing $SRC/$f" >&2; exit 1; }
    [ "$(tail -c 1 "$SRC/$f" | od -An -c | tr -d ' ')" = '\n' ] || { echo "$SRC/$f does not end in a newline" >&2; exit 1; }
    echo "file $f $(wc -l <"$SRC/$f")" >>"$TMP"
    cat "$SRC/$f" >>"$TMP"
done
zstd -q -19 -f "$TMP" -o "$OUT"
chmod 644 "$OUT"   # mktemp made the input 0600 and zstd copies the mode
echo "$OUT: $(wc -c <"$OUT") bytes ($(wc -c <"$TMP") unpacked)"
