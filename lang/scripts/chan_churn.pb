// Makes N channels one after another, each used once and dropped: a channel's Rust side is
// freed by a cleanup once the collector finds its record unreachable, so memory stays flat.
// pebble run chan_churn.pb N [EVERY]   (EVERY: also collect every EVERY channels)
let n = int(args()[0])
let every = 0
if len(args()) > 1 { every = int(args()[1]) }
let total = 0
for i in 0..n {
  let c = chan(1)
  c <- i
  total = total + <-c
  if every > 0 and i % every == 0 { gc() }
}
print(total)
