# The I/O phase bound's tick, called by WsStreamC.feed for every chunk a socket delivers.
cdef void io_phase_tick() noexcept nogil
