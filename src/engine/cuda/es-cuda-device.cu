/* es-cuda-device.cu: the CUDA device list, nvidia-smi style: names, compute
 * capability, memory, driver and runtime versions from the CUDA runtime, and the
 * live readings (utilization, temperature, power) from NVML, which is loaded with
 * dlopen when libnvidia-ml.so.1 is there: the backend does not need it, and a machine
 * without the driver's NVML still lists its devices.
 *
 * What it is not: a monitor. Each call reads the values once. */
#include "es-cuda-private.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* The few NVML entry points used, declared here (nvml.h is not needed to build). */
typedef int nvmlReturn_t;                     /* 0 = NVML_SUCCESS */
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
#define NVML_TEMPERATURE_GPU 0

typedef struct {
  bool ok;
  nvmlReturn_t (*init) (void);
  nvmlReturn_t (*by_pci) (const char *bus_id, nvmlDevice_t *dev);
  nvmlReturn_t (*utilization) (nvmlDevice_t dev, nvmlUtilization_t *u);
  nvmlReturn_t (*temperature) (nvmlDevice_t dev, int sensor, unsigned int *t);
  nvmlReturn_t (*power) (nvmlDevice_t dev, unsigned int *mw);
  nvmlReturn_t (*power_limit) (nvmlDevice_t dev, unsigned int *mw);
  nvmlReturn_t (*driver_version) (char *buf, unsigned int len);
} Nvml;

static Nvml nvml;
static pthread_once_t nvml_once = PTHREAD_ONCE_INIT;

/* Loads NVML once per process; it stays loaded (and initialized) until exit. */
static void
nvml_load (void)
{
  void *h = dlopen ("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);

  if (h == NULL)
    return;
  nvml.init = (nvmlReturn_t (*) (void)) dlsym (h, "nvmlInit_v2");
  nvml.by_pci = (nvmlReturn_t (*) (const char *, nvmlDevice_t *)) dlsym (h, "nvmlDeviceGetHandleByPciBusId_v2");
  nvml.utilization = (nvmlReturn_t (*) (nvmlDevice_t, nvmlUtilization_t *)) dlsym (h, "nvmlDeviceGetUtilizationRates");
  nvml.temperature = (nvmlReturn_t (*) (nvmlDevice_t, int, unsigned int *)) dlsym (h, "nvmlDeviceGetTemperature");
  nvml.power = (nvmlReturn_t (*) (nvmlDevice_t, unsigned int *)) dlsym (h, "nvmlDeviceGetPowerUsage");
  nvml.power_limit = (nvmlReturn_t (*) (nvmlDevice_t, unsigned int *)) dlsym (h, "nvmlDeviceGetEnforcedPowerLimit");
  nvml.driver_version = (nvmlReturn_t (*) (char *, unsigned int)) dlsym (h, "nvmlSystemGetDriverVersion");
  nvml.ok = nvml.init != NULL && nvml.by_pci != NULL && nvml.init () == 0;
}

const char *
es_cuda_no_device_reason (cudaError_t e)
{
  static thread_local char why[320];   /* room for a translation */
  int runtime = 0;
  void *h;

  switch (e)
    {
    case cudaSuccess:
    case cudaErrorNoDevice:
      return es_translate ("no NVIDIA GPU was found");
    case cudaErrorInsufficientDriver:
      h = dlopen ("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
      if (h == NULL)
        return es_translate ("no NVIDIA driver is installed (libcuda.so.1 was not found)");
      dlclose (h);
      (void) cudaRuntimeGetVersion (&runtime);
      snprintf (why, sizeof why,
                es_translate ("the NVIDIA driver is older than the CUDA runtime %d.%d this "
                              "was built with: update the driver"),
                runtime / 1000, runtime % 1000 / 10);
      return why;
    default:
      return cudaGetErrorString (e);
    }
}

extern "C" int
es_cuda_device_count (void)
{
  int n = 0;

  if (cudaGetDeviceCount (&n) != cudaSuccess)
    {
      (void) cudaGetLastError ();
      return 0;
    }
  return n;
}

/* The NVML readings of the device at bus_id into info (left -1 when one fails). */
static void
nvml_read (const char *bus_id, EsCudaDeviceInfo *info)
{
  nvmlDevice_t dev;
  nvmlUtilization_t u;
  unsigned int v;

  pthread_once (&nvml_once, nvml_load);
  if (!nvml.ok || nvml.by_pci (bus_id, &dev) != 0)
    return;
  info->have_nvml = true;
  if (nvml.driver_version != NULL
      && nvml.driver_version (info->driver_string, sizeof info->driver_string) != 0)
    info->driver_string[0] = '\0';
  if (nvml.utilization != NULL && nvml.utilization (dev, &u) == 0)
    {
      info->utilization_gpu = (int) u.gpu;
      info->utilization_mem = (int) u.memory;
    }
  if (nvml.temperature != NULL && nvml.temperature (dev, NVML_TEMPERATURE_GPU, &v) == 0)
    info->temperature_c = (int) v;
  if (nvml.power != NULL && nvml.power (dev, &v) == 0)
    info->power_w = v / 1000.0;
  if (nvml.power_limit != NULL && nvml.power_limit (dev, &v) == 0)
    info->power_limit_w = v / 1000.0;
}

extern "C" bool
es_cuda_device_info (int device, EsCudaDeviceInfo *info, EsError *err)
{
  cudaError_t e;
  int n = 0, previous = -1, l2 = 0;

  memset (info, 0, sizeof *info);
  info->index = device;
  info->utilization_gpu = info->utilization_mem = info->temperature_c = -1;
  info->power_w = info->power_limit_w = -1.0;

  e = cudaGetDeviceCount (&n);
  if (e != cudaSuccess || n == 0)
    {
      (void) cudaGetLastError ();
      es_error_set (err, ES_ERR_UNSUPPORTED, "No CUDA device can be used: %s",
                    es_cuda_no_device_reason (e));
      return false;
    }
  if (device < 0 || device >= n)
    {
      es_error_set (err, ES_ERR_INVALID, "There is no CUDA device %d (this machine has %d)",
                    device, n);
      return false;
    }
  if (cudaDeviceGetAttribute (&info->cc_major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess
      || cudaDeviceGetAttribute (&info->cc_minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess
      || cudaDeviceGetAttribute (&info->multiprocessors, cudaDevAttrMultiProcessorCount, device) != cudaSuccess
      || cudaDeviceGetAttribute (&l2, cudaDevAttrL2CacheSize, device) != cudaSuccess
      || cudaDeviceGetPCIBusId (info->pci_bus_id, (int) sizeof info->pci_bus_id, device) != cudaSuccess
      || cudaDriverGetVersion (&info->driver_version) != cudaSuccess
      || cudaRuntimeGetVersion (&info->runtime_version) != cudaSuccess)
    {
      e = cudaGetLastError ();
      es_error_set (err, ES_ERR_UNSUPPORTED, "CUDA device %d cannot be queried: %s", device,
                    cudaGetErrorString (e));
      return false;
    }
  info->l2_bytes = (size_t) l2;
  {
    cudaDeviceProp prop;

    if (cudaGetDeviceProperties (&prop, device) == cudaSuccess)
      snprintf (info->name, sizeof info->name, "%s", prop.name);
    else
      (void) cudaGetLastError ();
  }
  /* the free memory needs the device's context: made current here, then put back */
  (void) cudaGetDevice (&previous);
  if (cudaSetDevice (device) != cudaSuccess
      || cudaMemGetInfo (&info->mem_free, &info->mem_total) != cudaSuccess)
    {
      e = cudaGetLastError ();
      es_error_set (err, ES_ERR_UNSUPPORTED, "CUDA device %d cannot be used: %s", device,
                    cudaGetErrorString (e));
      if (previous >= 0)
        (void) cudaSetDevice (previous);
      return false;
    }
  if (previous >= 0 && previous != device)
    (void) cudaSetDevice (previous);
  nvml_read (info->pci_bus_id, info);
  return true;
}

/* ---- pinned host memory (es_cuda_host_alloc) ------------------------------------ */

extern "C" void *
es_cuda_host_alloc (size_t bytes)
{
  void *ptr = NULL;

  /* cudaMallocHost aligns to pages, more than the 64 bytes promised */
  if (cudaMallocHost (&ptr, bytes > 0 ? bytes : 1) != cudaSuccess)
    {
      (void) cudaGetLastError ();   /* not a failure of the backend: clear it */
      return NULL;
    }
  return ptr;
}

extern "C" void
es_cuda_host_free (void *ptr)
{
  if (ptr != NULL)
    (void) cudaFreeHost (ptr);
}
