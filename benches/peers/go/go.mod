module safepoint.invalid/peers/stress-go

go 1.22
