package service

import "time"

// SetLookupRetries replaces the pauses of lookupRetries for a test and returns a function
// that restores them. Tests that call it must not run in parallel.
func SetLookupRetries(pauses []time.Duration) (restore func()) {
	saved := lookupRetries
	lookupRetries = pauses
	return func() { lookupRetries = saved }
}

// SetRotationLockWait replaces rotationLockWait for a test and returns a function that
// restores it. Tests that call it must not run in parallel.
func SetRotationLockWait(wait time.Duration) (restore func()) {
	saved := rotationLockWait
	rotationLockWait = wait
	return func() { rotationLockWait = saved }
}
