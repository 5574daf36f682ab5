#!/usr/bin/env bash
# Prints the CMAKE_ARGS for building llama-cpp-python on this machine.
#
# Why: on x86-64 llama.cpp builds with -march=native by default, which turns on its AMX
# kernels on CPUs that report AMX. In virtual machines that expose the AMX flags without
# granting the tile state (as on our CI machines), those kernels crash with SIGSEGV on the
# first batch of more than one token. So on x86-64 we build for exactly the SIMD features
# /proc/cpuinfo reports, minus AMX. Elsewhere (arm64, macOS) the native build is right.
set -eu
if [ "$(uname -s)" != Linux ] || [ "$(uname -m)" != x86_64 ]; then
  exit 0
fi
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
add() { case "$flags" in *" $1 "*) args="$args -D$2=ON" ;; *) args="$args -D$2=OFF" ;; esac; }
add avx GGML_AVX
add avx2 GGML_AVX2
add fma GGML_FMA
add f16c GGML_F16C
add bmi2 GGML_BMI2
add avx_vnni GGML_AVX_VNNI
add avx512f GGML_AVX512
add avx512vbmi GGML_AVX512_VBMI
add avx512_vnni GGML_AVX512_VNNI
add avx512_bf16 GGML_AVX512_BF16
echo "$args"
