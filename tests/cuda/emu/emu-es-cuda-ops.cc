/* emu-es-cuda-ops.cc: src/engine/cuda/es-cuda-ops.cu compiled by the C++ compiler against the CUDA
 * emulation (es-cuda-emu.h), for the emulated test runs. */
#include "es-cuda-ops.cu"
