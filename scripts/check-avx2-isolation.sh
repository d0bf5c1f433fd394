#!/usr/bin/env bash
# usage: scripts/check-avx2-isolation.sh BINARY...
# Fails if machine code that needs more than baseline x86-64 (VEX-encoded AVX/AVX2/FMA/F16C
# instructions, BMI1/2, LZCNT, MOVBE) sits in any function that is not part of the KernelsAVX2
# module. That module is the collectives' kernels compiled for AVX2 (docs/kernels.md §6); its
# code runs only after a CPU check. Both copies also emit the same helper functions (standard
# library specializations, under the same names), and the linker keeps one copy of each: if it
# ever kept the AVX2 one, baseline code would call it and stop with SIGILL on an older CPU.
# Also fails on any fused multiply-add anywhere (KernelsAVX2 included): one rounding instead of
# two would change results against the baseline copy and break the bit-parity rule.
set -euo pipefail
[[ $(uname -m) == x86_64 ]] || { echo "check-avx2-isolation: not x86-64, nothing to check"; exit 0; }
status=0
for bin in "$@"; do
  [[ -f $bin ]] || { echo "check-avx2-isolation: no such file: $bin" >&2; exit 2; }
  bad=$(objdump -d --no-show-raw-insn "$bin" | awk '
    /^[0-9a-f]+ <.*>:$/ { sym = $2; next }
    /^ +[0-9a-f]+:\t/ {
      split($0, parts, "\t"); insn = parts[2]; sub(/ .*/, "", insn)
      if (insn ~ /^vf(n)?m(add|sub)/ && !(sym in fma)) { fma[sym] = 1; nf++; f[nf] = "  " sym " (" insn ", fused multiply-add)" }
      if (insn ~ /^(v[a-z0-9]+|andn|bextr|blsi|blsmsk|blsr|bzhi|pdep|pext|rorx|sarx|shlx|shrx|mulx|lzcnt|movbe)$/ \
          && sym !~ /11KernelsAVX2/ && !(sym in seen)) { seen[sym] = 1; nv++; v[nv] = "  " sym " (" insn ")" }
    }
    END { for (i = 1; i <= nf; i++) print f[i]; for (i = 1; i <= nv; i++) print v[i] }')
  if [[ -n $bad ]]; then
    echo "check-avx2-isolation: $bin: functions outside KernelsAVX2 with non-baseline instructions, or with FMA:"
    echo "$bad" | head -20
    status=1
  else
    echo "check-avx2-isolation: $bin: ok"
  fi
done
exit $status
