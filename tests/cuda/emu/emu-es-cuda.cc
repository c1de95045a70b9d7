/* emu-es-cuda.cc: src/engine/cuda/es-cuda.cu compiled by the C++ compiler against the CUDA
 * emulation (es-cuda-emu.h), for the emulated test runs. */
#include "es-cuda.cu"
