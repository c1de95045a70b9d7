/* emu-es-cuda-graph.cc: src/engine/cuda/es-cuda-graph.cu compiled by the C++ compiler against
 * the CUDA emulation (es-cuda-emu.h), for the emulated test runs. */
#include "es-cuda-graph.cu"
