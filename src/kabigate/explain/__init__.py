"""Why a CRC changed: genksyms' CRC input rebuilt from two kernels' BTF (crc), and the disk
cache of kernels' types that the gate, the web and the CLI read it from (cache)."""
