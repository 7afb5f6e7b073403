"""radjepa_kernels: Triton kernels beside their PyTorch references (installed from kernels/)."""
