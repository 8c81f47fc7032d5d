import Foundation

/// A figure of one or more panels of x–y curves, written as SVG by csptrain itself (no plotting
/// library): axes with ticks and units, a legend, goal lines, and error bars where a point has
/// an interval. Pure: values in, text out.
public struct Figure: Sendable {
    public struct Point: Sendable, Equatable {
        public var x: Double
        public var y: Double
        /// An interval around `y` (a bootstrap interval, say), drawn as an error bar.
        public var low: Double?
        public var high: Double?
        public init(_ x: Double, _ y: Double, low: Double? = nil, high: Double? = nil) {
            self.x = x
            self.y = y
            self.low = low
            self.high = high
        }
    }

    public struct Series: Sendable {
        public var name: String
        public var color: String
        public var points: [Point]
        public var dashed = false
        public var dots = false
        public var width = 1.6
        public init(name: String, color: String, points: [Point], dashed: Bool = false, dots: Bool = false, width: Double = 1.6) {
            self.name = name
            self.color = color
            self.points = points
            self.dashed = dashed
            self.dots = dots
            self.width = width
        }
    }

    /// A horizontal (`y`) or vertical (`x`) reference line with its label.
    public struct Goal: Sendable {
        public enum Axis: Sendable { case x, y }
        public var axis: Axis
        public var value: Double
        public var label: String
        public init(_ axis: Axis, _ value: Double, _ label: String) {
            self.axis = axis
            self.value = value
            self.label = label
        }
    }

    public enum Format: Sendable { case plain, percent, seconds }

    public struct Panel: Sendable {
        public var title: String
        public var xLabel: String
        public var yLabel: String
        public var series: [Series]
        public var goals: [Goal] = []
        public var xFormat = Format.plain
        public var yFormat = Format.plain
        /// Fixed axis ranges (nil: from the data and goals).
        public var xRange: ClosedRange<Double>?
        public var yRange: ClosedRange<Double>?
        public init(title: String, xLabel: String, yLabel: String, series: [Series]) {
            self.title = title
            self.xLabel = xLabel
            self.yLabel = yLabel
            self.series = series
        }
    }

    public var title: String
    public var panels: [Panel]
    public var columns = 2
    public var note: String?

    public init(title: String, panels: [Panel], columns: Int = 2) {
        self.title = title
        self.panels = panels
        self.columns = columns
    }

    static let panelWidth = 420.0, panelHeight = 260.0
    static let left = 64.0, right = 16.0, top = 30.0, bottom = 46.0

    public func svg() -> String {
        let cols = max(1, min(columns, panels.count))
        let rows = (panels.count + cols - 1) / cols
        let cellW = Self.left + Self.panelWidth + Self.right, cellH = Self.top + Self.panelHeight + Self.bottom
        let width = Double(cols) * cellW + 10, height = 40 + Double(rows) * cellH + (note == nil ? 0 : 20)
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(fmt(width / 2))\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">\(escape(title))</text>\n"
        for (i, panel) in panels.enumerated() {
            let ox = Double(i % cols) * cellW + 5, oy = 40 + Double(i / cols) * cellH
            s += draw(panel, x: ox + Self.left, y: oy + Self.top)
        }
        if let note {
            s += "<text x=\"8\" y=\"\(fmt(height - 6))\" fill=\"#666\" font-size=\"11\">\(escape(note))</text>\n"
        }
        return s + "</svg>\n"
    }

    private func draw(_ p: Panel, x x0: Double, y y0: Double) -> String {
        let W = Self.panelWidth, H = Self.panelHeight
        var s = "<text x=\"\(fmt(x0 + W / 2))\" y=\"\(fmt(y0 - 10))\" text-anchor=\"middle\" font-weight=\"bold\">\(escape(p.title))</text>\n"
        s += "<rect x=\"\(fmt(x0))\" y=\"\(fmt(y0))\" width=\"\(fmt(W))\" height=\"\(fmt(H))\" fill=\"none\" stroke=\"#444\"/>\n"
        let points = p.series.flatMap(\.points)
        guard !points.isEmpty else {
            return s + "<text x=\"\(fmt(x0 + W / 2))\" y=\"\(fmt(y0 + H / 2))\" text-anchor=\"middle\" fill=\"#888\">no data</text>\n"
        }
        let xs = points.map(\.x) + p.goals.filter { $0.axis == .x }.map(\.value)
        let ys = points.flatMap { [$0.y, $0.low ?? $0.y, $0.high ?? $0.y] } + p.goals.filter { $0.axis == .y }.map(\.value)
        var xr = p.xRange ?? (xs.min()! ... xs.max()!)
        var yr = p.yRange ?? (ys.min()! ... ys.max()!)
        if xr.upperBound == xr.lowerBound { xr = xr.lowerBound ... xr.lowerBound + 1 }
        if yr.upperBound == yr.lowerBound { yr = yr.lowerBound ... yr.lowerBound + 1 }
        if p.yRange == nil {
            let pad = (yr.upperBound - yr.lowerBound) * 0.05
            yr = (yr.lowerBound >= 0 && yr.lowerBound - pad < 0 ? 0 : yr.lowerBound - pad) ... yr.upperBound + pad
        }
        func sx(_ v: Double) -> Double { x0 + (v - xr.lowerBound) / (xr.upperBound - xr.lowerBound) * W }
        func sy(_ v: Double) -> Double { y0 + H - (v - yr.lowerBound) / (yr.upperBound - yr.lowerBound) * H }
        for t in Self.ticks(yr, count: 5) {
            s += "<line x1=\"\(fmt(x0))\" y1=\"\(fmt(sy(t)))\" x2=\"\(fmt(x0 + W))\" y2=\"\(fmt(sy(t)))\" stroke=\"#e4e4e4\"/>"
            s += "<text x=\"\(fmt(x0 - 5))\" y=\"\(fmt(sy(t) + 4))\" text-anchor=\"end\">\(label(t, p.yFormat))</text>\n"
        }
        for t in Self.ticks(xr, count: 6) {
            s += "<line x1=\"\(fmt(sx(t)))\" y1=\"\(fmt(y0 + H))\" x2=\"\(fmt(sx(t)))\" y2=\"\(fmt(y0 + H + 4))\" stroke=\"#444\"/>"
            s += "<text x=\"\(fmt(sx(t)))\" y=\"\(fmt(y0 + H + 17))\" text-anchor=\"middle\">\(label(t, p.xFormat))</text>\n"
        }
        s += "<text x=\"\(fmt(x0 + W / 2))\" y=\"\(fmt(y0 + H + 36))\" text-anchor=\"middle\">\(escape(p.xLabel))</text>\n"
        let cy = y0 + H / 2, cx = x0 - 48
        s += "<text x=\"\(fmt(cx))\" y=\"\(fmt(cy))\" text-anchor=\"middle\" transform=\"rotate(-90 \(fmt(cx)) \(fmt(cy)))\">\(escape(p.yLabel))</text>\n"
        for g in p.goals {
            switch g.axis {
            case .y:
                s += "<line x1=\"\(fmt(x0))\" y1=\"\(fmt(sy(g.value)))\" x2=\"\(fmt(x0 + W))\" y2=\"\(fmt(sy(g.value)))\" stroke=\"#2f9e44\" stroke-dasharray=\"6,4\"/>"
                s += "<text x=\"\(fmt(x0 + W - 4))\" y=\"\(fmt(sy(g.value) - 4))\" text-anchor=\"end\" fill=\"#2f9e44\">\(escape(g.label))</text>\n"
            case .x:
                s += "<line x1=\"\(fmt(sx(g.value)))\" y1=\"\(fmt(y0))\" x2=\"\(fmt(sx(g.value)))\" y2=\"\(fmt(y0 + H))\" stroke=\"#2f9e44\" stroke-dasharray=\"6,4\"/>"
                s += "<text x=\"\(fmt(sx(g.value) - 4))\" y=\"\(fmt(y0 + 14))\" text-anchor=\"end\" fill=\"#2f9e44\">\(escape(g.label))</text>\n"
            }
        }
        var legendY = y0 + 14
        for series in p.series where !series.points.isEmpty {
            let path = series.points.map { "\(fmt(sx($0.x))),\(fmt(sy($0.y)))" }.joined(separator: " ")
            s += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(series.color)\" stroke-width=\"\(series.width)\"\(series.dashed ? " stroke-dasharray=\"5,4\"" : "")/>\n"
            for q in series.points {
                if let low = q.low, let high = q.high {
                    let x = fmt(sx(q.x))
                    s += "<line x1=\"\(x)\" y1=\"\(fmt(sy(low)))\" x2=\"\(x)\" y2=\"\(fmt(sy(high)))\" stroke=\"\(series.color)\"/>"
                    s += "<line x1=\"\(fmt(sx(q.x) - 3))\" y1=\"\(fmt(sy(low)))\" x2=\"\(fmt(sx(q.x) + 3))\" y2=\"\(fmt(sy(low)))\" stroke=\"\(series.color)\"/>"
                    s += "<line x1=\"\(fmt(sx(q.x) - 3))\" y1=\"\(fmt(sy(high)))\" x2=\"\(fmt(sx(q.x) + 3))\" y2=\"\(fmt(sy(high)))\" stroke=\"\(series.color)\"/>"
                }
                if series.dots || q.low != nil { s += "<circle cx=\"\(fmt(sx(q.x)))\" cy=\"\(fmt(sy(q.y)))\" r=\"2.8\" fill=\"\(series.color)\"/>" }
            }
            if p.series.count > 1 {
                s += "\n<line x1=\"\(fmt(x0 + 8))\" y1=\"\(fmt(legendY - 4))\" x2=\"\(fmt(x0 + 28))\" y2=\"\(fmt(legendY - 4))\" stroke=\"\(series.color)\" stroke-width=\"2\"\(series.dashed ? " stroke-dasharray=\"5,4\"" : "")/>"
                s += "<text x=\"\(fmt(x0 + 33))\" y=\"\(fmt(legendY))\">\(escape(series.name))</text>"
                legendY += 16
            }
            s += "\n"
        }
        return s
    }

    /// Round tick values (1, 2 or 5 × 10ⁿ apart) inside `range`.
    static func ticks(_ range: ClosedRange<Double>, count: Int) -> [Double] {
        let span = range.upperBound - range.lowerBound
        guard span > 0, span.isFinite else { return [range.lowerBound] }
        let raw = span / Double(count)
        let magnitude = pow(10, (log10(raw) + 1e-9).rounded(.down))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { span / $0 <= Double(count) + 1e-9 } ?? 10 * magnitude
        let first = Int((range.lowerBound / step - 1e-9).rounded(.up)), last = Int((range.upperBound / step + 1e-9).rounded(.down))
        guard first <= last else { return [] }
        // k × step, rounded to 12 digits: 7 × 0.1 is 0.7, not 0.7000000000000001.
        return (first ... last).map { k in (Double(k) * step * 1e12).rounded() / 1e12 }
    }

    func label(_ v: Double, _ format: Format) -> String {
        switch format {
        case .plain:
            if v == v.rounded(), abs(v) < 1e9 { return String(Int(v)) }
            return String(format: "%g", v)
        case .percent:
            let p = 100 * v
            return p == p.rounded() ? "\(Int(p))%" : String(format: "%.1f%%", p)
        case .seconds:
            if v >= 7200 { return String(format: "%g h", v / 3600) }
            if v >= 120 { return String(format: "%g min", v / 60) }
            return String(format: "%g s", v)
        }
    }
}

func fmt(_ v: Double) -> String { String(format: "%.1f", v) }

func escape(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
}
