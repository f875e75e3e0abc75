package registry

// WithSleepForTest replaces the retry wait, so tests see the waits without
// spending them.
var WithSleepForTest = withSleep
