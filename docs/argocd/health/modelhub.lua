-- Argo CD health of a kubetune.io/ModelHub: its Ready condition says whether every model's
-- source exists and every reference resolves.
local hs = {status = "Progressing", message = "Waiting for the kubetune operator"}
local status = obj.status
if status == nil or status.conditions == nil then
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = string.format("Waiting for the operator to handle generation %d", generation)
  return hs
end

for _, c in ipairs(status.conditions) do
  if c.type == "Ready" then
    if c.status == "True" then
      hs.status = "Healthy"
    elseif c.status == "False" then
      hs.status = "Degraded"
    end
    hs.message = c.message or c.reason or ("Ready is " .. c.status)
    return hs
  end
end
return hs
