-- Many jobs' ``output`` entries in one call: KEYS are the jobs' streams, ARGV four values per
-- key: index, text, output tokens, the delta's token ids (space-separated). One script call instead of a pipeline of XADDs costs the
-- caller a fifth of the CPU.
for i = 1, #KEYS do
  -- an ``output`` entry, as genq.store.streams reads it
  redis.call('XADD', KEYS[i], '*', 'e', 'out', 'i', ARGV[4*i-3], 't', ARGV[4*i-2], 'n', ARGV[4*i-1],
    'k', ARGV[4*i])
end
return #KEYS
