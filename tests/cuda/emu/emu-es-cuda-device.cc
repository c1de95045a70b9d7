/* emu-es-cuda-device.cc: src/engine/cuda/es-cuda-device.cu compiled by the C++ compiler against the CUDA
 * emulation (es-cuda-emu.h), for the emulated test runs. */
#include "es-cuda-device.cu"
