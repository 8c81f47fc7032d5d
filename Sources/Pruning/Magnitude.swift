import Tensors

/// Magnitude pruning (one-shot or gradual on the cubic schedule): at each update step the mask
/// keeps the largest-magnitude weights of each pruned layer (or, with `scope: global`, above one
/// threshold over all of them); between updates the master weights are held at zero outside the
/// mask, so what the optimizer moves there is undone, and the broadcast is the masked weights.
public struct MagnitudeProjection: ProjectionStep {
    public let settings: PruningSettings
    public let layers: PrunedLayers
    /// (total): 1 where a weight of a pruned layer is kept (unused outside pruned layers).
    public private(set) var mask: [UInt8]
    public private(set) var active = false

    public init(settings: PruningSettings, layout: ParameterLayout) {
        self.settings = settings
        layers = PrunedLayers(layout: layout, exclude: settings.exclude)
        mask = [UInt8](repeating: 1, count: layout.totalCount)
    }

    public var name: String { settings.schedule.kind == .oneShot ? "one-shot-magnitude" : "gradual-magnitude" }

    public mutating func project(weights: UnsafeMutableBufferPointer<Float>, step: Int, learningRate: Double,
                                 layout: ParameterLayout, broadcast: UnsafeMutableBufferPointer<Float>) -> SupportUpdate? {
        var update: SupportUpdate?
        if settings.schedule.isUpdateStep(step) {
            let s = settings.schedule.sparsity(atStep: step)
            selectMask(UnsafeBufferPointer(weights), sparsity: s)
            active = true
            update = SupportUpdate(step: step, sparsity: s, layers: layers.tensors.map { spec in
                let kept = spec.range.reduce(0) { $0 + Int(mask[$1]) }
                return .init(name: spec.name, density: Double(kept) / Double(max(1, spec.count)))
            })
        }
        if active {
            for spec in layers.tensors { for i in spec.range where mask[i] == 0 { weights[i] = 0 } }
        }
        _ = broadcast.update(fromContentsOf: weights)
        return update
    }

    mutating func selectMask(_ w: UnsafeBufferPointer<Float>, sparsity s: Double) {
        switch settings.scope {
        case .layer:
            for spec in layers.tensors { magnitudeMask(w, spec: spec, keep: keptCount(spec.count, sparsity: s), into: &mask) }
        case .global:
            // One threshold over every pruned value: gather them, select, then mark per layer.
            var all: [Float] = []
            all.reserveCapacity(layers.count)
            for spec in layers.tensors { all += w[spec.range] }
            let keep = keptCount(all.count, sparsity: s)
            var joint = [UInt8](repeating: 0, count: all.count)
            all.withUnsafeBufferPointer { magnitudeMask($0, spec: TensorSpec(name: "all", shape: [all.count], offset: 0, prunable: true), keep: keep, into: &joint) }
            var n = 0
            for spec in layers.tensors { for i in spec.range { mask[i] = joint[n]; n += 1 } }
        }
    }
}
